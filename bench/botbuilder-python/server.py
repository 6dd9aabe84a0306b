"""botbuilder-python baseline of the endpoint benchmark: CloudAdapter on aiohttp.

    python server.py <port> <openid-metadata-url>

Configured like chatwarden: a single-tenant app registration (APP_ID / APP_PASSWORD /
APP_TENANTID) and the channel OpenID metadata served by the benchmark's local server. The turn
handler does nothing, so a messageReaction activity is answered without any outbound call.
"""

import os
import sys

from aiohttp import web
from botbuilder.core import ActivityHandler
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import CallerIdConstants
from botframework.connector.auth import AuthenticationConstants


class Config:
    """Setting any endpoint makes BotFrameworkAuthenticationFactory build a
    _ParameterizedBotFrameworkAuthentication from exactly these values, so every one is given:
    the public-cloud constants, except the channel (and emulator) OpenID metadata URL."""

    def __init__(self, metadata_url: str) -> None:
        self.APP_ID = os.environ["MICROSOFT_APP_ID"]
        self.APP_PASSWORD = os.environ["MICROSOFT_APP_PASSWORD"]
        self.APP_TENANTID = os.environ["MICROSOFT_APP_TENANT_ID"]
        self.APP_TYPE = "SingleTenant"
        self.VALIDATE_AUTHORITY = True
        self.TO_CHANNEL_FROM_BOT_LOGIN_URL = (
            AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL_PREFIX + self.APP_TENANTID
        )
        self.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
        self.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER
        self.OAUTH_URL = AuthenticationConstants.OAUTH_URL
        self.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = metadata_url
        self.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL = metadata_url
        self.CALLER_ID = CallerIdConstants.public_azure_channel


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: server.py <port> <openid-metadata-url>")
    port, metadata_url = int(sys.argv[1]), sys.argv[2]
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(Config(metadata_url)))
    bot = ActivityHandler()  # does nothing on any activity

    async def messages(request: web.Request) -> web.StreamResponse:
        return await adapter.process(request, bot)

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
