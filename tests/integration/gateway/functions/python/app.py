"""Python handlers run by the real awslambdaric, unchanged."""
import json
import os

COUNT = 0  # survives warm invocations


def handler(event, context):
    global COUNT
    COUNT += 1
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-runtime": "python"},
        "cookies": ["py=1; Path=/"],
        "body": json.dumps({
            "routeKey": event.get("routeKey"),
            "rawPath": event.get("rawPath"),
            "id": (event.get("pathParameters") or {}).get("id"),
            "method": event["requestContext"]["http"]["method"],
            "requestId": context.aws_request_id,
            "function": context.function_name,
            "memory": context.memory_limit_in_mb,
            "remainingMs": context.get_remaining_time_in_millis(),
            "count": COUNT,
            "handlerEnv": os.environ.get("_HANDLER"),
        }),
    }


def fails(event, context):
    raise ValueError("python handler failed on purpose")
