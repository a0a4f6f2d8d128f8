"""The echo handler of bench/functions, for reelway's python3.11 runtime
(awslambdaric): it answers the event it got, as rw_fn_test's echo does."""


def handler(event, context):
    return event
