package cli

import (
	"fmt"

	"github.com/gatehouse/gatehouse/controlplane/webhooks"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/secretbox"
)

// masterKeyRotate re-seals the stored webhook secrets under MASTER_KEY. The
// rotation (package secretbox): run the servers with the new key as
// MASTER_KEY and the old one in MASTER_KEY_PREVIOUS, run this, then drop
// MASTER_KEY_PREVIOUS. This is also how a deployment leaves the published
// development key, which the servers now refuse.
func (a *app) masterKeyRotate(args []string) error {
	c := a.command("controlplane master-key rotate", "[--json]   (env MASTER_KEY: the new key; MASTER_KEY_PREVIOUS: the old one)")
	asJSON := c.fs.Bool("json", false, "print the result as JSON")
	if err := c.parse(args, nil); err != nil {
		return err
	}
	if err := config.RequireSecrets("MASTER_KEY"); err != nil {
		return usageErrorf(c.name, "%v", err)
	}
	if len(a.cfg.PreviousMasterKeys) == 0 {
		return usageErrorf(c.name, "MASTER_KEY_PREVIOUS is not set: it must hold the key the secrets are sealed with now")
	}
	box, err := secretbox.New(a.cfg.MasterKey, a.cfg.PreviousMasterKeys...)
	if err != nil {
		return usageErrorf(c.name, "%v", err)
	}
	db, err := a.pool()
	if err != nil {
		return c.fail(err)
	}
	changed, total, err := webhooks.ResealSecrets(a.ctx, db, box)
	if err != nil {
		return c.fail(fmt.Errorf("after re-encrypting %d of the %d secrets read: %w", changed, total, err))
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, map[string]int{"resealed": changed, "secrets": total}))
	}
	fmt.Fprintf(a.stdout, "re-encrypted %d of %d webhook signing secrets under MASTER_KEY; MASTER_KEY_PREVIOUS can be removed once every process runs with the new MASTER_KEY\n", changed, total)
	return nil
}
