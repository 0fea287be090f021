"""Local web page and JSON API (``busi-lite serve``); needs the ``web`` extra (starlette, uvicorn,
python-multipart). See :mod:`busi_lite.web.app`."""
