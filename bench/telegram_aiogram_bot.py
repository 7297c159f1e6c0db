"""The aiogram 3 side of ``bench/telegram_aiogram.py``: the same three-step bot, webhook mode,
its FSM in Redis (``RedisStorage``). Run by the bench with an interpreter that has aiogram
(``pip install -e .[bench]``, or a separate venv: aiogram pins pydantic below our version).

    python bench/telegram_aiogram_bot.py PORT REDIS_URL API_BASE TOKEN SECRET
"""

from __future__ import annotations

import sys

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.redis import RedisStorage
from aiogram.types import Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web


class Form(StatesGroup):
    name = State()
    city = State()


router = Router()


@router.message(Form.name)
async def got_name(message: Message, state: FSMContext) -> None:
    await state.update_data(name=message.text)
    await state.set_state(Form.city)
    await message.answer(f"Nice to meet you, {message.text}. Which city?")


@router.message(Form.city)
async def got_city(message: Message, state: FSMContext) -> None:
    await state.clear()
    await message.answer(f"Thanks, {message.text} noted.")


@router.message()
async def start(message: Message, state: FSMContext) -> None:
    await state.set_state(Form.name)
    await message.answer("What is your name?")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    port, redis_url, api_base, token, secret = sys.argv[1:6]
    bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(api_base)))
    dp = Dispatcher(storage=RedisStorage.from_url(redis_url))
    dp.include_router(router)
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=secret).register(app, path="/webhook")
    setup_application(app, dp, bot=bot)
    web.run_app(app, host="127.0.0.1", port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
