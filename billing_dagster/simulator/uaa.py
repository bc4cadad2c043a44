"""A small UAA: client-credentials tokens signed RS256, the JWKS and the OpenID discovery, and
users' tokens for the UI's login (authorization_code grant; the login form is uaa_login.py).

Wire formats are those of docs/cf-and-uaa.md §2. Token times (``iat``/``exp``) are real
wall-clock time, never the foundation's virtual time, so a client's token refresh logic sees
real expiry. The same object verifies bearer tokens the way the Cloud Controller does
(signature, expiry, audience ``cloud_controller``, issuer).
"""

import base64
import binascii
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from urllib.parse import unquote_plus

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from billing_dagster.simulator.responses import (
    Response,
    invalid_auth_token,
    json_response,
    not_authenticated,
)
from billing_dagster.simulator.uaa_login import Grant, Logins

DEFAULT_AUTHORITIES: tuple[str, ...] = (
    "cloud_controller.admin_read_only",
    "usage.admin",
    "usage.read",
)
"""cloud.gov's ``billing`` UAA client (docs/cf-and-uaa.md §7.4)."""

TASK_CLIENT = ("billing-tasks", "billing-tasks-secret")
TASK_AUTHORITIES: tuple[str, ...] = ("cloud_controller.read", "cloud_controller.write")
"""A client that may run tasks of the app: read and write scopes (SpaceDeveloper in its space
on a real foundation, docs/cf-and-uaa.md §10.6); the scale-out run launcher uses it."""

_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def audience_of(client_id: str, scopes: Sequence[str]) -> list[str]:
    """UAA's ``aud``: the client id, then each scope's resource (text before the last dot)."""
    audience = [client_id]
    for scope in scopes:
        resource = scope.rsplit(".", 1)[0]
        if resource not in audience:
            audience.append(resource)
    return audience


def _oauth_error(
    status: int, error: str, description: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return json_response(
        status, {"error": error, "error_description": description}, headers + _NO_STORE
    )


class Uaa:
    """One RSA key, one main client and any others (``other_clients``: id -> (secret,
    authorities)); ``uaa_base`` is the UAA's URL, e.g. ``<api>/uaa``."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        authorities: Sequence[str] = DEFAULT_AUTHORITIES,
        token_validity_seconds: int = 43_200,
        other_clients: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    ) -> None:
        if token_validity_seconds < 2:
            raise ValueError("token_validity_seconds must be at least 2")
        self.client_id = client_id
        self.authorities = tuple(authorities)
        self._clients = {cid: (secret, tuple(scopes))
                         for cid, (secret, scopes) in (other_clients or {}).items()}
        self._clients[client_id] = (client_secret, self.authorities)
        self._validity = token_validity_seconds
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_key = self._private_key.public_key()
        self.key_id = f"sim-key-{uuid.uuid4().hex[:8]}"
        self._public_pem = self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        self.logins = Logins()

    @staticmethod
    def issuer(uaa_base: str) -> str:
        return f"{uaa_base}/oauth/token"

    # -- token endpoint --------------------------------------------------------------------

    def token(
        self, form: Mapping[str, str], authorization: str | None, uaa_base: str
    ) -> Response:
        """``POST /oauth/token``: client credentials from Basic auth or the form body."""
        credentials = self._credentials(form, authorization)
        if credentials is None:
            return _oauth_error(
                401, "unauthorized", "Full authentication is required to access this resource",
                (("WWW-Authenticate", 'Basic realm="UAA/client", error="unauthorized", '
                  'error_description="Full authentication is required to access this resource"'),),
            )
        client_id, secret, method = credentials
        if form.get("grant_type") == "authorization_code" and self.logins.client_ok(client_id,
                                                                                     secret):
            grant = self.logins.redeem(form, client_id)
            if isinstance(grant, str):
                return _oauth_error(400, "invalid_grant", grant)
            return json_response(200, self._issue_for_user(grant, method, uaa_base), _NO_STORE)
        known = self._clients.get(client_id)
        if known is None or secret != known[0]:
            return _oauth_error(
                401, "unauthorized", "Bad credentials",
                (("WWW-Authenticate", 'Basic realm="UAA/client", error="unauthorized", '
                  'error_description="Bad credentials"'),),
            )
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type",
                                f"Unsupported grant type: {grant_type}")
        authorities = known[1]
        scopes = list(authorities)
        if form.get("scope"):
            requested = form["scope"].split()
            outside = [scope for scope in requested if scope not in authorities]
            if outside:
                return _oauth_error(400, "invalid_scope", f"Invalid scope: {' '.join(outside)}")
            scopes = [scope for scope in authorities if scope in requested]
        return json_response(200, self._issue(client_id, authorities, scopes, method, uaa_base),
                             _NO_STORE)

    @staticmethod
    def _credentials(
        form: Mapping[str, str], authorization: str | None
    ) -> tuple[str, str, str] | None:
        if authorization and authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, _, secret = decoded.partition(":")
            return unquote_plus(client_id), unquote_plus(secret), "client_secret_basic"
        if "client_id" in form:
            return form["client_id"], form.get("client_secret", ""), "client_secret_post"
        return None

    def _issue(self, client_id: str, authorities: Sequence[str], scopes: list[str],
               auth_method: str, uaa_base: str) -> dict[str, object]:
        jti = uuid.uuid4().hex
        issued_at = int(time.time())
        claims = {
            "jti": jti,
            "client_auth_method": auth_method,
            "sub": client_id,
            "authorities": list(authorities),
            "scope": scopes,
            "client_id": client_id,
            "cid": client_id,
            "azp": client_id,
            "grant_type": "client_credentials",
            "rev_sig": hashlib.sha256(client_id.encode()).hexdigest()[:8],
            "iat": issued_at,
            "exp": issued_at + self._validity,
            "iss": self.issuer(uaa_base),
            "zid": "uaa",
            "aud": audience_of(client_id, scopes),
        }
        token = jwt.encode(
            claims,
            self._private_key,
            algorithm="RS256",
            headers={"jku": f"{uaa_base}/token_keys", "kid": self.key_id, "typ": "JWT"},
        )
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self._validity - 1,
            "scope": " ".join(scopes),
            "jti": jti,
        }

    def _issue_for_user(self, grant: Grant, auth_method: str, uaa_base: str
                        ) -> dict[str, object]:
        """A user's access token (and id_token for ``openid``), as UAA issues them after
        the authorization-code flow."""
        jti = uuid.uuid4().hex
        issued_at = int(time.time())
        user, scopes = grant.user, list(grant.scopes)
        common = {"sub": user.user_id, "user_id": user.user_id, "user_name": user.user_name,
                  "origin": "uaa", "email": user.email, "iat": issued_at,
                  "exp": issued_at + self._validity, "iss": self.issuer(uaa_base),
                  "zid": "uaa", "azp": grant.client_id, "cid": grant.client_id,
                  "client_id": grant.client_id, "grant_type": "authorization_code",
                  "auth_time": issued_at}
        headers = {"jku": f"{uaa_base}/token_keys", "kid": self.key_id, "typ": "JWT"}
        access = jwt.encode(
            {"jti": jti, **common, "client_auth_method": auth_method, "scope": scopes,
             "rev_sig": hashlib.sha256(user.user_id.encode()).hexdigest()[:8],
             "aud": audience_of(grant.client_id, [s for s in scopes if s != "openid"])},
            self._private_key, algorithm="RS256", headers=headers)
        reply: dict[str, object] = {"access_token": access, "token_type": "bearer",
                                    "expires_in": self._validity - 1,
                                    "scope": " ".join(scopes), "jti": jti}
        if "openid" in scopes:
            reply["id_token"] = jwt.encode(
                {"jti": uuid.uuid4().hex, **common, "aud": [grant.client_id],
                 "scope": ["openid"], "amr": ["pwd"],
                 **({"nonce": grant.nonce} if grant.nonce else {})},
                self._private_key, algorithm="RS256", headers=headers)
        return reply

    # -- keys and discovery ----------------------------------------------------------------

    def jwk(self) -> dict[str, str]:
        numbers = self._public_key.public_numbers()
        return {
            "kty": "RSA",
            "e": _b64url_uint(numbers.e),
            "use": "sig",
            "kid": self.key_id,
            "alg": "RS256",
            "value": self._public_pem,
            "n": _b64url_uint(numbers.n),
        }

    def token_keys(self) -> Response:
        return json_response(200, {"keys": [self.jwk()]}, (("ETag", f'"{self.key_id}"'),))

    def openid_configuration(self, uaa_base: str) -> Response:
        return json_response(200, {
            "issuer": self.issuer(uaa_base),
            "authorization_endpoint": f"{uaa_base}/oauth/authorize",
            "token_endpoint": f"{uaa_base}/oauth/token",
            "userinfo_endpoint": f"{uaa_base}/userinfo",
            "jwks_uri": f"{uaa_base}/token_keys",
            "end_session_endpoint": f"{uaa_base}/logout.do",
            "scopes_supported": ["openid", "profile", "email", "phone", "roles",
                                 "user_attributes"],
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "code id_token", "id_token", "token id_token"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "id_token_encryption_alg_values_supported": ["none"],
            "claim_types_supported": ["normal"],
            "claims_supported": ["sub", "user_name", "origin", "iss", "auth_time", "amr",
                                 "acr", "client_id", "aud", "zid", "grant_type", "user_id",
                                 "azp", "scope", "exp", "iat", "jti", "rev_sig", "cid"],
            "claims_parameter_supported": False,
            "service_documentation": "http://docs.cloudfoundry.org/api/uaa/",
            "ui_locales_supported": ["en-US"],
            "code_challenge_methods_supported": ["S256", "plain"],
        })

    # -- verification (the Cloud Controller's side) ----------------------------------------

    def verify(self, authorization: str | None, uaa_base: str) -> frozenset[str]:
        """The scopes of a valid ``Authorization: bearer <jwt>``; raises ApiError (401) if not.

        Missing header: CF-NotAuthenticated. Anything else wrong (scheme, signature, expiry,
        audience without ``cloud_controller``, issuer, refresh token): CF-InvalidAuthToken.
        """
        if not authorization:
            raise not_authenticated()
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise invalid_auth_token()
        try:
            claims = jwt.decode(
                token.strip(),
                self._public_key,
                algorithms=["RS256"],
                audience="cloud_controller",
                issuer=self.issuer(uaa_base),
                options={"require": ["exp", "iat", "jti"]},
            )
        except jwt.InvalidTokenError:
            raise invalid_auth_token() from None
        if str(claims["jti"]).endswith("-r"):
            raise invalid_auth_token()
        scope = claims.get("scope", [])
        return frozenset(scope if isinstance(scope, list) else str(scope).split())
