"""A REST TOKEN authorizer, as people write them for API Gateway, run unchanged
by awslambdaric. The token says what to answer."""


def policy(principal, effect, resource, context=None):
    answer = {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    }
    if context is not None:
        answer["context"] = context
    return answer


def handler(event, context):
    token = event["authorizationToken"]
    arn = event["methodArn"]
    # arn:aws:execute-api:REGION:ACCOUNT:API/STAGE/METHOD/PATH
    api_stage = arn.split("/", 2)[0] + "/" + arn.split("/")[1]
    print("authorizing", token, "for", arn)
    if token == "Bearer allow":
        return policy("user-1", "Allow", api_stage + "/*", {"tier": "gold", "quota": 7, "admin": False})
    if token == "Bearer get-only":
        return policy("user-2", "Allow", api_stage + "/GET/*")
    if token == "Bearer deny":
        return policy("user-3", "Deny", arn)
    if token == "Bearer unauthorized":
        raise Exception("Unauthorized")
    if token == "Bearer nested":
        return policy("user-4", "Allow", "*", {"bad": {"nested": True}})
    if token == "Bearer no-principal":
        return {"policyDocument": policy("x", "Allow", "*")["policyDocument"]}
    raise RuntimeError("authorizer crashed on " + token)
