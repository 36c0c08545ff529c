package apikey

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gatehouse/gatehouse/internal/apierror"
	keyformat "github.com/gatehouse/gatehouse/internal/apikey"
)

// maxAuthorizationLen bounds the Authorization header we look at. A key is
// 50 characters (68 as basic credentials); anything much longer is garbage
// and is refused before any decoding.
const maxAuthorizationLen = 256

const howToAuthenticate = "Authenticate with an API key in the Authorization header: " +
	"`Authorization: Bearer sk_test_…`, or HTTP basic auth with the key as the username and an empty password " +
	"(`curl -u sk_test_…:`). Find your keys in the dashboard."

var errMissing = apierror.Authentication("api_key_missing", "No API key provided. "+howToAuthenticate)

func malformed(msg string) *apierror.Error {
	return apierror.Authentication("api_key_malformed", msg+" "+howToAuthenticate)
}

// credential extracts the API key from the request headers without any
// lookup. On failure it returns the error object to send.
func credential(h http.Header) (string, *apierror.Error) {
	vals := h["Authorization"]
	switch {
	case len(vals) == 0:
		return "", errMissing
	case len(vals) > 1:
		return "", malformed("The request has several Authorization headers; send exactly one.")
	}
	v := vals[0]
	if len(v) > maxAuthorizationLen {
		return "", malformed(fmt.Sprintf("The Authorization header is %d bytes long; an API key is %d characters.", len(v), keyformat.Len))
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 || c > 0x7e) && c != '\t' {
			return "", malformed("The Authorization header contains bytes that are not printable ASCII.")
		}
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", errMissing
	}
	scheme, rest, _ := strings.Cut(v, " ")
	rest = strings.TrimLeft(rest, " \t")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if rest == "" {
			return "", malformed("The Authorization header has no API key after Bearer.")
		}
		return rest, nil
	case strings.EqualFold(scheme, "Basic"):
		return basicCredential(rest)
	case strings.HasPrefix(scheme, "sk_") || strings.HasPrefix(scheme, "rk_"):
		return "", malformed("The Authorization header has an API key but no scheme; put `Bearer ` before the key.")
	default:
		return "", malformed("The Authorization header uses an unsupported scheme; use Bearer or Basic.")
	}
}

// basicCredential takes the key from Stripe-style basic credentials: the key
// is the username and the password is empty.
func basicCredential(enc string) (string, *apierror.Error) {
	if enc == "" {
		return "", malformed("The Authorization header has no credentials after Basic.")
	}
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(enc); err != nil {
			return "", malformed("The basic credentials in the Authorization header are not valid base64.")
		}
	}
	user, pass, ok := strings.Cut(string(b), ":")
	switch {
	case !printable(user) || strings.ContainsAny(user, " \t"):
		return "", malformed("The basic-auth username contains spaces or bytes that are not printable ASCII; it must be the API key alone.")
	case !ok:
		return "", malformed("The basic credentials in the Authorization header have no ':' after the username.")
	case user == "" && pass != "":
		return "", malformed("The API key goes in the username of the basic credentials, not the password.")
	case user == "":
		return "", malformed("The basic credentials in the Authorization header have an empty username; it must be the API key.")
	case pass != "":
		return "", malformed("Send the API key as the basic-auth username with an empty password.")
	}
	return user, nil
}

// malformedKey explains why keyformat.Parse refused key, precisely enough for
// a developer to fix their configuration, without echoing the key.
func malformedKey(err error, key string) *apierror.Error {
	switch {
	case errors.Is(err, keyformat.ErrPrefix):
		return malformed("The API key has an unknown prefix; keys start with sk_test_, sk_live_, rk_test_ or rk_live_.")
	case errors.Is(err, keyformat.ErrLength):
		return malformed(fmt.Sprintf("The API key has %d characters; keys have %d. It was probably truncated or has extra characters.", len(key), keyformat.Len))
	case errors.Is(err, keyformat.ErrChars):
		return malformed("The API key contains characters that never appear in keys (keys are letters and digits after the prefix).")
	case errors.Is(err, keyformat.ErrChecksum):
		return malformed("The API key's checksum does not match; it was probably mistyped or truncated.")
	}
	return malformed("The API key is malformed.")
}
