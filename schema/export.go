package schema

import (
	"fmt"
	"os"
	"path/filepath"
)

// vetScript runs plain `cue vet` over a fleet with the exported schema, one
// file at a time, as the loader does.
const vetScript = `#!/bin/sh
# Validate a gitmetal fleet with plain cue vet: every file on its own,
# against the schema of its kind. Usage: vet.sh FLEET_DIR
# Written by 'gitmetal schema export'. Rules that span files (a MAC, IP or
# hostname used twice, references, template rendering) and the check of
# action names are gitmetal validate's alone.
set -u
schema=$(cd "$(dirname "$0")" && pwd)
cd "${1:-.}" || exit 2
rc=0
vet() { cue vet -c "$schema/$1.cue" "$2" || rc=1; }
[ -f gitmetal.cue ] && vet settings gitmetal.cue
for kind in hardware:hardware templates:template workflows:workflow; do
	dir=${kind%%:*}
	[ -d "$dir" ] || continue
	find "$dir" -type f \( -name '*.cue' -o -name '*.yaml' -o -name '*.yml' -o -name '*.json' \) \
		-not -path '*/.*' -not -path '*/cue.mod/*' | sort > "${TMPDIR:-/tmp}/gitmetal-vet.$$"
	while read -r f; do vet "${kind#*:}" "$f"; done < "${TMPDIR:-/tmp}/gitmetal-vet.$$"
	rm -f "${TMPDIR:-/tmp}/gitmetal-vet.$$"
done
exit $rc
`

// Export writes the schema of every kind to dir as self-contained CUE files
// (hardware.cue, template.cue, workflow.cue, settings.cue) and a vet.sh that
// runs plain `cue vet` over a fleet with them.
func Export(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export schema: %w", err)
	}
	for _, k := range kinds {
		src, err := Sources(k)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, k.String()+".cue"), src, 0o644); err != nil {
			return fmt.Errorf("export schema: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "vet.sh"), []byte(vetScript), 0o755); err != nil {
		return fmt.Errorf("export schema: %w", err)
	}
	return nil
}
