package logredact_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/caddymodule/logredact"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// Secrets a request can carry outside Authorization and Cookie, which
// Caddy masks by itself.
const (
	querySecret = "QuerySecret123"
	headerKey   = "HeaderSecret456"
	signature   = "t=1764400000,v1=0123456789abcdef0123456789abcdef"
	pastedKey   = "sk_test_4eC39HqLyjWDarjtT1zdp7dcAbCdEf12"
)

// An upstream that breaks off its response makes reverse_proxy log the
// request at WARN, its query and headers included: through the filter,
// none of the secrets reaches the log file, and the entry is still there.
func TestCaddysOwnLogsAreRedacted(t *testing.T) {
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"partial":`))
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	defer dying.Close()
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	port := testenv.FreePort(t)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	log {
		output file %s
		level WARN
		format filter {
			wrap json
			fields {
				request>uri gatehouse_redact
				request>headers gatehouse_redact
			}
		}
	}
}
http://127.0.0.1:%d {
	reverse_proxy %s
}`, logFile, port, strings.TrimPrefix(dying.URL, "http://"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/v1/customers?api_key=%s&limit=3", port, querySecret), nil)
	req.Header.Set("X-Api-Key", headerKey)
	req.Header.Set("X-Gateway-Signature", signature)
	req.Header.Set("X-Note", "my key is "+pastedKey)
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err = http.DefaultClient.Do(req)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	_ = caddy.Stop() // flushes and closes the log file

	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	if !strings.Contains(log, `"uri":"/v1/customers?api_key=`+redact.Mask+`&limit=3"`) || !strings.Contains(log, "X-Note") {
		t.Fatalf("no redacted request in the log:\n%s", log)
	}
	for _, secret := range []string{querySecret, headerKey, signature, pastedKey} {
		if strings.Contains(log, secret) {
			t.Errorf("%s reached the log:\n%s", secret, log)
		}
	}
}

// One header's values, filtered on their own (request>headers>Name).
func TestFilterOneHeader(t *testing.T) {
	var f logredact.Filter
	got := f.Filter(zap.Any("X-Note", caddyhttp.LoggableStringArray{"plain", "key " + pastedKey}))
	arr, ok := got.Interface.(zapcore.ArrayMarshaler)
	if !ok {
		t.Fatalf("filtered field %#v", got)
	}
	enc := zapcore.NewMapObjectEncoder()
	_ = enc.AddArray("v", arr)
	if s := fmt.Sprint(enc.Fields["v"]); strings.Contains(s, pastedKey) || !strings.Contains(s, "plain") {
		t.Errorf("filtered values %s", s)
	}
}

// The filter takes no options: a block is refused, not ignored.
func TestFilterRefusesOptions(t *testing.T) {
	for _, opts := range []string{" {\n\t\t\t\t\tmask all\n\t\t\t\t}", " strict"} {
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte("{\n\tlog {\n\t\tformat filter {\n\t\t\tfields {\n\t\t\t\trequest>uri gatehouse_redact"+
			opts+"\n\t\t\t}\n\t\t}\n\t}\n}\n:8080 {\n\trespond ok\n}\n"), nil)
		if err == nil {
			t.Errorf("gatehouse_redact%q adapted", opts)
		}
	}
}
