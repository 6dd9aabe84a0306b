#!/usr/bin/env python3
"""Writes everything the endpoint benchmark sends and serves into one directory.

    make_fixtures.py <repo> <out-dir> <metadata-port> <app-id>

<out-dir>/www/              document root of the local OpenID server
    v1/.well-known/openidconfiguration   metadata: issuer, jwks_uri, RS256
    keys                                 JWKS: test-key-1 as kid "bench-key", endorsed for msteams
    v1/.well-known/keys                  the same JWKS where login.botframework.com has it: the
                                         Teams SDK derives its key URL from the metadata URL
                                         (bench/teams-sdk-js/server.js)
<out-dir>/activity.json     a Teams messageReaction activity (answered without any outbound call)
<out-dir>/token.valid       RS256 with test-key-1, kid bench-key, iss api.botframework.com,
                            aud = app id, exp in 2 h, nbf 10 s ago, serviceurl = the activity's
<out-dir>/token.forged      the same claims signed with test-key-2 under kid bench-key
<out-dir>/token.wrong-aud   signed correctly (test-key-1) but for another app id
"""

import json
import sys
import time
from pathlib import Path

import jwt  # PyJWT (with cryptography for RS256)

KID = "bench-key"
ISSUER = "https://api.botframework.com"
SERVICE_URL = "http://127.0.0.1:9/"
TENANT_ID = "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e"
OTHER_APP_ID = "00000000-0000-4000-8000-0000000000ff"


def main() -> None:
    repo, out, port, app_id = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    fixtures = repo / "tests" / "fixtures"
    public = json.loads((fixtures / "test-keys-public.json").read_text())
    key1 = (fixtures / "test-key-1.pem").read_text()
    key2 = (fixtures / "test-key-2.pem").read_text()

    www = out / "www"
    (www / "v1" / ".well-known").mkdir(parents=True, exist_ok=True)
    metadata = {
        "issuer": ISSUER,
        "jwks_uri": f"http://127.0.0.1:{port}/keys",
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    (www / "v1" / ".well-known" / "openidconfiguration").write_text(json.dumps(metadata))
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "use": "sig",
                "kid": KID,
                "n": public["test-key-1"]["n"],
                "e": public["test-key-1"]["e"],
                "endorsements": ["msteams"],
            }
        ]
    }
    (www / "keys").write_text(json.dumps(jwks))
    (www / "v1" / ".well-known" / "keys").write_text(json.dumps(jwks))

    activity = {
        "type": "messageReaction",
        "id": "1719900000456",
        "timestamp": "2026-05-04T09:12:33.120Z",
        "serviceUrl": SERVICE_URL,
        "channelId": "msteams",
        "from": {"id": "29:1AbCdEfGh-member", "name": "Sam Member", "aadObjectId": "3c2b1a09-5555-4d6e-8f70-8192a3b4c5d6"},
        "conversation": {
            "isGroup": True,
            "conversationType": "channel",
            "tenantId": TENANT_ID,
            "id": "19:c0ffee@thread.tacv2;messageid=1719900000123",
        },
        "recipient": {"id": f"28:{app_id}", "name": "chatwarden"},
        "replyToId": "1719900000123",
        "reactionsAdded": [{"type": "like"}],
        "channelData": {
            "teamsChannelId": "19:c0ffee@thread.tacv2",
            "teamsTeamId": "19:team@thread.tacv2",
            "channel": {"id": "19:c0ffee@thread.tacv2"},
            "team": {"id": "19:team@thread.tacv2"},
            "tenant": {"id": TENANT_ID},
        },
    }
    (out / "activity.json").write_text(json.dumps(activity, separators=(",", ":")))

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": app_id, "exp": now + 7200, "nbf": now - 10, "serviceurl": SERVICE_URL}
    header = {"kid": KID}
    (out / "token.valid").write_text(jwt.encode(claims, key1, algorithm="RS256", headers=header))
    (out / "token.forged").write_text(jwt.encode(claims, key2, algorithm="RS256", headers=header))
    (out / "token.wrong-aud").write_text(
        jwt.encode(dict(claims, aud=OTHER_APP_ID), key1, algorithm="RS256", headers=header)
    )


if __name__ == "__main__":
    main()
