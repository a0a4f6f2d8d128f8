"""The operators' API's TOKEN authorizer: a Lambda authorizer in Python, run
unchanged by awslambdaric. It allows the tokens listed (comma-separated) in
OPS_TOKENS for every method of the API, and answers Unauthorized otherwise."""
import hmac
import os


def handler(event, context):
    token = event.get("authorizationToken", "")
    allowed = [t for t in os.environ.get("OPS_TOKENS", "").split(",") if t]
    if not any(hmac.compare_digest(token, t) for t in allowed):
        raise Exception("Unauthorized")
    # arn:aws:execute-api:REGION:ACCOUNT:API/STAGE/METHOD/PATH -> the whole stage
    api, stage = event["methodArn"].split("/")[0:2]
    return {
        "principalId": "operator",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{api}/{stage}/*"}
            ],
        },
        "context": {"role": "operator"},
    }
