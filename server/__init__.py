"""responses-bridge server: `POST /v1/responses` in front of chat-completions backends.

Run it with `responses-bridge serve --upstream URL` (see `server.cli`), or build the ASGI app with
`server.app.create_app(config)`.
"""
