package drain

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

// BenchmarkReloadResets counts the requests that fail (connection reset or
// EOF) while 16 clients send POSTs back to back over keep-alive connections
// and Caddy reloads its config, with the drain off and on. Each b.N is one
// reload; the figure is failed requests per reload.
//
//	go test -run '^$' -bench ReloadResets -benchtime 20x ./caddymodule/drain/
func BenchmarkReloadResets(b *testing.B) {
	for _, tc := range []struct {
		name   string
		window time.Duration
	}{{"off", -1}, {"1s", time.Second}} {
		b.Run(tc.name, func(b *testing.B) {
			port, admin := testenv.FreePort(b), testenv.FreePort(b)
			if err := caddy.Load(config(port, admin, "0", tc.window), true); err != nil {
				b.Fatal(err)
			}
			defer caddy.Stop()
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			var failed, ok atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						resp, err := c.Post(url, "text/plain", nil) // never retried by the client
						if err != nil {
							failed.Add(1)
							continue
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						ok.Add(1)
						// Clients at different paces leave some connections idle.
						time.Sleep(time.Duration(g) * time.Millisecond)
					}
				}()
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				time.Sleep(200 * time.Millisecond) // traffic between reloads
				if err := caddy.Load(config(port, admin, fmt.Sprint(i+1), tc.window), true); err != nil {
					b.Fatal(err)
				}
			}
			close(stop)
			wg.Wait()
			b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/reload")
			b.ReportMetric(float64(ok.Load()), "requests")
		})
	}
}
