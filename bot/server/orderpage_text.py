"""The quick-order page's words in the languages a small shop's customers write in (en, tr, de, es,
fr, ru); any other language reads English. ``{discount}`` and ``{number}`` are filled in."""

from __future__ import annotations

from collections.abc import Mapping

TEXT: Mapping[str, Mapping[str, str]] = {
    "en": {
        "title": "Order", "discount": "Your prices include your {discount}% discount.", "qty": "Quantity",
        "less": "One less", "more": "One more", "total": "Total", "cart": "In your cart", "order": "Place order",
        "empty_cart": "Please choose at least one product.",
        "bad_qty": "Quantities are whole numbers from 0 to 999.",
        "refused": "We could not take this order:", "nothing": "There is nothing to order right now.",
        "thanks": "Thank you!", "placed": "Your order is placed. Your order number is {number}.",
        "again": "Order something else",
        "bad_title": "Link not valid", "bad": "This order link is not valid. Please ask us for a new one.",
        "expired_title": "Link expired", "expired": "This order link has expired. Please ask us for a new one.",
        "revoked_title": "Link withdrawn", "revoked": "This order link was withdrawn. Please ask us for a new one.",
        "busy_title": "Too many requests", "busy": "Please wait a moment and try again.",
        "later": "We could not take this order right now. Please try again in a minute.",
    },
    "tr": {
        "title": "Sipariş", "discount": "Fiyatlarınıza %{discount} indiriminiz dahildir.", "qty": "Adet",
        "less": "Bir azalt", "more": "Bir artır", "total": "Toplam", "cart": "Sepetinizde",
        "order": "Siparişi ver", "empty_cart": "Lütfen en az bir ürün seçin.",
        "bad_qty": "Adetler 0 ile 999 arasında tam sayı olmalıdır.",
        "refused": "Bu siparişi alamadık:", "nothing": "Şu anda sipariş verilebilecek ürün yok.",
        "thanks": "Teşekkürler!", "placed": "Siparişiniz alındı. Sipariş numaranız: {number}.",
        "again": "Başka bir şey sipariş et",
        "bad_title": "Geçersiz bağlantı", "bad": "Bu sipariş bağlantısı geçerli değil. Lütfen bizden yenisini isteyin.",
        "expired_title": "Bağlantının süresi doldu",
        "expired": "Bu sipariş bağlantısının süresi doldu. Lütfen bizden yenisini isteyin.",
        "revoked_title": "Bağlantı geri alındı",
        "revoked": "Bu sipariş bağlantısı geri alındı. Lütfen bizden yenisini isteyin.",
        "busy_title": "Çok fazla istek", "busy": "Lütfen biraz bekleyip tekrar deneyin.",
        "later": "Siparişinizi şu anda alamadık. Lütfen bir dakika sonra tekrar deneyin.",
    },
    "de": {
        "title": "Bestellung", "discount": "Ihre Preise enthalten Ihren Rabatt von {discount}\u00a0%.", "qty": "Menge",
        "less": "Eins weniger", "more": "Eins mehr", "total": "Summe", "cart": "Im Warenkorb",
        "order": "Bestellen", "empty_cart": "Bitte wählen Sie mindestens ein Produkt.",
        "bad_qty": "Mengen sind ganze Zahlen von 0 bis 999.",
        "refused": "Wir konnten diese Bestellung nicht annehmen:",
        "nothing": "Im Moment gibt es nichts zu bestellen.",
        "thanks": "Vielen Dank!", "placed": "Ihre Bestellung ist eingegangen. Ihre Bestellnummer ist {number}.",
        "again": "Noch etwas bestellen",
        "bad_title": "Link ungültig", "bad": "Dieser Bestelllink ist ungültig. Bitte fragen Sie uns nach einem neuen.",
        "expired_title": "Link abgelaufen",
        "expired": "Dieser Bestelllink ist abgelaufen. Bitte fragen Sie uns nach einem neuen.",
        "revoked_title": "Link zurückgezogen",
        "revoked": "Dieser Bestelllink wurde zurückgezogen. Bitte fragen Sie uns nach einem neuen.",
        "busy_title": "Zu viele Anfragen", "busy": "Bitte warten Sie einen Moment und versuchen Sie es erneut.",
        "later": "Wir konnten die Bestellung gerade nicht annehmen. Bitte versuchen Sie es in einer Minute erneut.",
    },
    "es": {
        "title": "Pedido", "discount": "Sus precios incluyen su descuento del {discount}\u00a0%.", "qty": "Cantidad",
        "less": "Uno menos", "more": "Uno más", "total": "Total", "cart": "En su carrito",
        "order": "Hacer el pedido", "empty_cart": "Elija al menos un producto.",
        "bad_qty": "Las cantidades son números enteros de 0 a 999.",
        "refused": "No pudimos aceptar este pedido:", "nothing": "Ahora mismo no hay nada que pedir.",
        "thanks": "¡Gracias!", "placed": "Su pedido está hecho. Su número de pedido es {number}.",
        "again": "Pedir otra cosa",
        "bad_title": "Enlace no válido", "bad": "Este enlace de pedido no es válido. Pídanos uno nuevo.",
        "expired_title": "Enlace caducado", "expired": "Este enlace de pedido ha caducado. Pídanos uno nuevo.",
        "revoked_title": "Enlace retirado", "revoked": "Este enlace de pedido fue retirado. Pídanos uno nuevo.",
        "busy_title": "Demasiadas solicitudes", "busy": "Espere un momento y vuelva a intentarlo.",
        "later": "No pudimos aceptar el pedido ahora. Inténtelo de nuevo en un minuto.",
    },
    "fr": {
        "title": "Commande", "discount": "Vos prix incluent votre remise de {discount}\u00a0%.", "qty": "Quantité",
        "less": "Un de moins", "more": "Un de plus", "total": "Total", "cart": "Dans votre panier",
        "order": "Commander", "empty_cart": "Veuillez choisir au moins un produit.",
        "bad_qty": "Les quantités sont des nombres entiers de 0 à 999.",
        "refused": "Nous n'avons pas pu prendre cette commande :",
        "nothing": "Il n'y a rien à commander pour le moment.",
        "thanks": "Merci !", "placed": "Votre commande est passée. Votre numéro de commande est {number}.",
        "again": "Commander autre chose",
        "bad_title": "Lien non valide",
        "bad": "Ce lien de commande n'est pas valide. Demandez-nous-en un nouveau.",
        "expired_title": "Lien expiré", "expired": "Ce lien de commande a expiré. Demandez-nous-en un nouveau.",
        "revoked_title": "Lien retiré", "revoked": "Ce lien de commande a été retiré. Demandez-nous-en un nouveau.",
        "busy_title": "Trop de demandes", "busy": "Veuillez patienter un instant et réessayer.",
        "later": "Nous n'avons pas pu prendre la commande maintenant. Réessayez dans une minute.",
    },
    "ru": {
        "title": "Заказ", "discount": "В ваши цены включена ваша скидка {discount}\u00a0%.", "qty": "Количество",
        "less": "На один меньше", "more": "На один больше", "total": "Итого", "cart": "В корзине",
        "order": "Оформить заказ", "empty_cart": "Выберите хотя бы один товар.",
        "bad_qty": "Количество — целое число от 0 до 999.",
        "refused": "Мы не смогли принять этот заказ:", "nothing": "Сейчас нечего заказать.",
        "thanks": "Спасибо!", "placed": "Ваш заказ оформлен. Номер вашего заказа: {number}.",
        "again": "Заказать что-то ещё",
        "bad_title": "Ссылка недействительна",
        "bad": "Эта ссылка для заказа недействительна. Попросите у нас новую.",
        "expired_title": "Срок ссылки истёк",
        "expired": "Срок действия этой ссылки для заказа истёк. Попросите у нас новую.",
        "revoked_title": "Ссылка отозвана", "revoked": "Эта ссылка для заказа отозвана. Попросите у нас новую.",
        "busy_title": "Слишком много запросов", "busy": "Подождите немного и попробуйте снова.",
        "later": "Сейчас мы не смогли принять заказ. Попробуйте ещё раз через минуту.",
    },
}


def language_of(tag: str | None) -> str:
    """The page's language for a BCP 47 tag (``tr-TR`` → ``tr``); English when it has none."""
    primary = (tag or "").split("-")[0].split("_")[0].strip().lower()
    return primary if primary in TEXT else "en"


def accepted_language(header: str | None) -> str:
    """The first language of an ``Accept-Language`` header that the page has (for the pages of
    a bad link, which names no customer)."""
    for part in (header or "")[:500].split(","):
        found = language_of(part.split(";")[0])
        if found != "en" or part.strip().lower().startswith("en"):
            return found
    return "en"
