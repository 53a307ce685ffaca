"""The chat page, the browser module ``broker.js`` and the API reference page: static files,
served by ``broker.front.routes.web`` as they are (no build step)."""
