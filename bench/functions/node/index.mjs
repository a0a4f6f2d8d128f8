// The echo handler of bench/functions, for reelway's nodejs20.x runtime
// (aws-lambda-ric) and for serverless-offline: it answers the event it got,
// as rw_fn_test's C echo handler does.
export const handler = async (event) => event;
