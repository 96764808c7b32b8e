"""Client access tokens from the Python service SDK, for WebPubSubClientCredentialTests.

Usage: service_token.py CASES_JSON
CASES_JSON is a list of objects {"connectionString", "hub", "userId"?, "roles"?, "groups"?,
"minutes"?, "swiftToken"?, "swiftAudience"?}. For each case it prints one line
`RESULT {"baseUrl", "url", "header", "claims", "swiftVerified"}`, where header and claims are
those of the SDK's `get_client_access_token` token, and swiftVerified tells whether PyJWT
accepts the Swift token (HS256 signature with the access key, audience swiftAudience, not expired).
"""
import json
import sys

import jwt
from azure.messaging.webpubsubservice import WebPubSubServiceClient


def access_key(connection_string):
    for segment in connection_string.split(";"):
        if "=" in segment:
            key, value = segment.split("=", 1)
            if key.strip().lower() == "accesskey":
                return value
    raise ValueError("no AccessKey")


def main():
    for case in json.loads(sys.argv[1]):
        client = WebPubSubServiceClient.from_connection_string(case["connectionString"], hub=case["hub"])
        kwargs = {"minutes_to_expire": case.get("minutes", 60)}
        if case.get("userId") is not None:
            kwargs["user_id"] = case["userId"]
        if case.get("roles"):
            kwargs["roles"] = case["roles"]
        if case.get("groups"):
            kwargs["groups"] = case["groups"]
        result = client.get_client_access_token(**kwargs)
        token = result["token"]
        out = {
            "baseUrl": result["baseUrl"],
            "url": result["url"],
            "header": jwt.get_unverified_header(token),
            "claims": jwt.decode(token, options={"verify_signature": False}),
        }
        if case.get("swiftToken"):
            try:
                jwt.decode(case["swiftToken"], access_key(case["connectionString"]), algorithms=["HS256"],
                           audience=case["swiftAudience"])
                out["swiftVerified"] = True
            except jwt.PyJWTError as error:
                out["swiftVerified"] = False
                out["swiftError"] = str(error)
        print("RESULT " + json.dumps(out, sort_keys=True), flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
