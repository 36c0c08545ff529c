package apierror

// Code documents one error code: the catalogue behind the docs page, where
// every doc_url lands on an anchor named after the code.
type Code struct {
	Code        string
	Type        Type
	Status      int
	Description string
}

// Codes lists every code any component emits. A test checks that codes used
// in the source appear here, so the docs never miss one.
var Codes = []Code{
	{"parameter_missing", TypeInvalidRequest, 400, "A required parameter was not sent. `param` names it."},
	{"parameter_invalid", TypeInvalidRequest, 400, "A parameter has a value that is not acceptable. `param` names it and the message says why."},
	{"parameter_unknown", TypeInvalidRequest, 400, "The request sent a parameter this endpoint does not accept. Check the spelling against the API reference."},
	{"body_invalid", TypeInvalidRequest, 400, "The request body could not be parsed as JSON or as a form."},
	{"body_too_large", TypeInvalidRequest, 413, "The request body is larger than the endpoint accepts (1 MB for the /v1 API)."},
	{"resource_missing", TypeInvalidRequest, 404, "No object with that id exists in this organisation and environment."},
	{"route_missing", TypeInvalidRequest, 404, "No API endpoint matches this method and path."},
	{"method_not_allowed", TypeInvalidRequest, 405, "The endpoint exists but does not accept this HTTP method."},
	{"api_version_invalid", TypeInvalidRequest, 400, "The Api-Version header names a version that does not exist. Supported versions are listed in the message."},
	{"api_key_missing", TypeAuthentication, 401, "No API key was sent. Send `Authorization: Bearer sk_test_…`."},
	{"api_key_malformed", TypeAuthentication, 401, "The Authorization header or the key in it is not well formed (wrong prefix, length, characters or checksum)."},
	{"api_key_invalid", TypeAuthentication, 401, "The API key is not known, or it was revoked."},
	{"api_key_expired", TypeAuthentication, 401, "The API key expired (after a roll, or at the expiry set on it). Use its replacement."},
	{"ip_not_allowed", TypePermission, 403, "The API key has an IP allowlist and the request came from another address."},
	{"scope_missing", TypePermission, 403, "The restricted key lacks the scope this endpoint requires. The message names it."},
	{"last_owner", TypeInvalidRequest, 400, "The change would leave the organisation without an owner (dashboard and CLI). Make another member an owner first."},
	{"permission_denied", TypePermission, 403, "The signed-in user's role does not allow this change (dashboard and CLI: only owners change owners; only owners and admins manage members)."},
	{"identity_invalid", TypeAuthentication, 401, "An upstream service received a request without a valid, fresh gateway identity signature."},
	{"rate_limited", TypeRateLimit, 429, "Too many requests for the limit named in the message. Wait for Retry-After seconds."},
	{"lock_timeout", TypeRateLimit, 429, "Another request was changing the same objects at the same moment (Postgres resolved the conflict by failing this one). Nothing was changed: retry the request after Retry-After seconds."},
	{"quota_exceeded", TypeRateLimit, 429, "The organisation or key used its request quota for the period. The message gives the reset time."},
	{"idempotency_key_invalid", TypeInvalidRequest, 400, "The Idempotency-Key header is empty, longer than 255 characters, has non-printable characters or was sent twice."},
	{"idempotency_key_in_use", TypeIdempotency, 409, "A request with the same Idempotency-Key is still being processed. Retry after Retry-After seconds."},
	{"idempotency_key_reused", TypeIdempotency, 422, "The Idempotency-Key was already used for a different request (method, path or body). Stripe answers 400 here; we follow the IETF draft's 422."},
	{"idempotency_response_unavailable", TypeIdempotency, 422, "The original response was not stored (too large, streamed, or a success marked Cache-Control: no-store because it carried a secret), so it cannot be replayed; the request was not executed again."},
	{"idempotency_unavailable", TypeAPI, 503, "Idempotency records cannot be read right now, so a request carrying an Idempotency-Key was not executed. Retry later."},
	{"request_invalid", TypeInvalidRequest, 400, "The HTTP request itself was refused (malformed, or refused by the gateway for a reason the message gives). The status says which refusal (400, 408, 411, 431 …), and the type follows it: authentication_error for a bare 401, permission_error for a bare 403, invalid_request_error otherwise."},
	{"service_unavailable", TypeAPI, 503, "The service behind the gateway is temporarily unable to take requests (no healthy upstream). Retry later."},
	{"upstream_unavailable", TypeAPI, 502, "The service behind the gateway could not be reached or failed to answer."},
	{"upstream_timeout", TypeAPI, 504, "The service behind the gateway took too long to answer."},
	{"auth_unavailable", TypeAPI, 503, "The key store cannot be reached and the key is not in the gateway's cache. Retry later."},
	{"dependency_unavailable", TypeAPI, 503, "A dependency (Postgres, Redis, Kafka) is unreachable; /readyz says which. Retry later."},
	{"rate_limit_unavailable", TypeAPI, 503, "Rate limits cannot be checked right now and the gateway refuses requests rather than let them through unchecked. Retry later."},
	{"request_timeout", TypeAPI, 503, "A control-plane read took longer than 30 s and was stopped, usually a request-log search that no filter narrows. Narrow it (a created[gte]/created[lt] range, more filters) and retry."},
	{"internal_error", TypeAPI, 500, "An unexpected error on our side. Retry later; contact support with the request id if it persists."},
	{"limit_reached", TypeInvalidRequest, 400, "The organisation has as many of these objects as it may have in this environment (16 webhook endpoints, as Stripe allows). Delete one to make room."},
	{"url_invalid", TypeInvalidRequest, 400, "The webhook URL is not a valid http(s) URL, or resolves to an address that is not allowed."},
}
