// An HTTP API Lambda authorizer with simple responses (payload 2.0), run
// unchanged by aws-lambda-ric. Identity sources: the X-Key header and ?team=.
export const handler = async (event) => {
  const [key, team] = event.identitySource;
  console.log("authorizing", key, team, "for", event.routeArn);
  if (key === "boom") throw new Error("authorizer crashed");
  return {
    isAuthorized: key === "open-sesame",
    context: { team, routeKey: event.routeKey, hasHeaders: typeof event.headers === "object" },
  };
};
