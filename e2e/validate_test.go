package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Caddy's own check of a config before a reload, run beside the running
// gateway as the README's known gaps say: with spools of its own (the
// running gateway holds its spools' locks, which validation would take).
func TestGatewayValidatesBesideARunningGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(stack.Bin, "gateway"), "validate",
		"--config", filepath.Join(Root(), "Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(append([]string{}, stack.Env...), "DATA_DIR="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gateway validate of the running Caddyfile with DATA_DIR of its own: %v\n%s", err, tail(string(out), 600))
	}
}
