"""Names the process actions' format fixes, apart from their pydantic models (``models_process``)
so that the runtime reads them without building the models at start (issue 14: startup)."""

from __future__ import annotations

#: The list the e-mail unsubscribe link feeds: unsubscribed from it, a contact gets no e-mail.
EMAIL_LIST = "email"
