package actions

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"runtime"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gitmetal/gitmetal/schema"
)

// oci2disk: IMG_URL (an image reference), DEST_DISK, REGISTRY_USERNAME,
// REGISTRY_PASSWORD, SKIP_VERIFY (TLS), COMPRESSED (ignored), and the
// download settings of image2disk. The image must have one layer: the
// disk image, stored raw or compressed in any format image2disk reads.
// The manifest comes through go-containerregistry (auth, indexes: the
// machine's own architecture is chosen); the layer blob is streamed by
// the resumable downloader and verified against its digest.
func (a *Actions) oci2disk(ctx context.Context, step schema.Step, out Reporter) error {
	p := newParams(step.Env)
	imgRef := p.required("IMG_URL")
	dest := p.required("DEST_DISK")
	skipVerify := p.boolean("SKIP_VERIFY", false)
	interval := p.seconds("PROGRESS_INTERVAL_SECONDS", a.cfg.ProgressInterval)
	retry := a.retryPolicy(p)
	var ref name.Reference
	if imgRef != "" {
		var err error
		if ref, err = name.ParseReference(imgRef); err != nil {
			p.fail("IMG_URL", imgRef, "not an image reference: %v", err)
		}
	}
	if err := p.err(); err != nil {
		return err
	}
	if p.has("COMPRESSED") {
		out.Logf("COMPRESSED is ignored: the compression is detected from the layer's first bytes")
	}

	auth := authn.Anonymous
	if user := p.str("REGISTRY_USERNAME"); user != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: user, Password: p.str("REGISTRY_PASSWORD")})
	}
	base := a.cfg.HTTPClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	if skipVerify {
		t, ok := base.(*http.Transport)
		if !ok {
			return fmt.Errorf("env SKIP_VERIFY: the agent's HTTP transport is a %T, not an *http.Transport", base)
		}
		t = t.Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by SKIP_VERIFY
		base = t
		out.Logf("SKIP_VERIFY: the registry's TLS certificate is not verified")
	}

	img, err := remote.Image(ref,
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(base),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if len(layers) != 1 {
		return fmt.Errorf("pull %s: the image has %d layers, want exactly one (the disk image)", ref, len(layers))
	}
	digest, err := layers[0].Digest()
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	want, err := hex.DecodeString(digest.Hex)
	if err != nil || digest.Algorithm != "sha256" {
		return fmt.Errorf("pull %s: layer digest %s: want a sha256 digest", ref, digest)
	}

	repo := ref.Context()
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	client := &http.Client{Transport: rt, CheckRedirect: a.cfg.HTTPClient.CheckRedirect}
	url := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), digest)
	sum := checksum{algo: "sha256", want: want}
	src := a.newSource(ctx, client, url, sum.newHash(), retry, out)
	defer src.Close()
	out.Logf("writing %s (layer %s) to %s", ref, digest, dest)
	return a.streamToDisk(ctx, src, dest, sum, interval, out)
}
