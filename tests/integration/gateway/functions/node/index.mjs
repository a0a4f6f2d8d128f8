// Node.js handlers run by the real aws-lambda-ric, unchanged.
let count = 0; // survives warm invocations

export const handler = async (event, context) => {
  count += 1;
  return {
    statusCode: 200,
    headers: { "content-type": "application/json", "x-runtime": "node" },
    body: JSON.stringify({
      routeKey: event.routeKey,
      rawPath: event.rawPath,
      id: event.pathParameters?.id,
      method: event.requestContext.http.method,
      requestId: context.awsRequestId,
      function: context.functionName,
      memory: context.memoryLimitInMB,
      remainingMs: context.getRemainingTimeInMillis(),
      count,
    }),
  };
};

export const fails = async () => {
  throw new TypeError("node handler failed on purpose");
};
