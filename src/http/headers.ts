/** Distribution sends this on every /v2/ response; Docker checks it on `GET /v2/`. */
export const API_VERSION_HEADER = { 'docker-distribution-api-version': 'registry/2.0' } as const;
