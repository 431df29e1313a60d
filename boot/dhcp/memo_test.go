package dhcp

import (
	"bytes"
	"maps"
	"net"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-memdb"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// TestMemoWarm: a reply built from the memo is the reply built without
// it, byte for byte, for every golden case of reservation mode, with the
// memo warmed by all the other cases first.
func TestMemoWarm(t *testing.T) {
	t.Parallel()
	st := testStore(t)
	warm := testHandler(t, testConfig(t, ModeReservation, st))
	var cases []handlerCase
	for _, tc := range handlerCases() {
		if tc.mode == "" {
			cases = append(cases, tc)
			if _, err := warm.Handle(tc.req(t), ServerPort); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
	}
	for _, tc := range cases {
		cold := testHandler(t, testConfig(t, ModeReservation, st))
		want, err := cold.Handle(tc.req(t), ServerPort)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := warm.Handle(tc.req(t), ServerPort)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (want.Reply == nil) != (got.Reply == nil) || want.Reply != nil && !bytes.Equal(want.Reply.Bytes(), got.Reply.Bytes()) {
			t.Errorf("%s: the memo's reply differs from a cold handler's", tc.name)
		}
	}
}

// TestMemoFollowsStore: a commit reaches the next reply whether it
// replaces a machine (a new value, so a new key) or only the repository
// settings an unchanged machine falls back on (the same key, so the memo
// must notice the settings it used have changed).
func TestMemoFollowsStore(t *testing.T) {
	t.Parallel()
	f := testFleet()
	st := store.TestStore(t, f)
	h := testHandler(t, testConfig(t, ModeReservation, st))
	ask := func(mac string) *dhcpv4.DHCPv4 {
		t.Helper()
		res, err := h.Handle(newRequest(t, dhcpv4.MessageTypeDiscover, mac), ServerPort)
		if err != nil || res.Reply == nil {
			t.Fatalf("%s: no reply: %s %v", mac, res.Note, err)
		}
		back, err := dhcpv4.FromBytes(res.Reply.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return back
	}
	if got := ask(macDefaults).DNS(); !slices.EqualFunc(got, []net.IP{net.ParseIP("10.10.0.53")}, net.IP.Equal) {
		t.Fatalf("before: DNS %v, want the settings' 10.10.0.53", got)
	}
	ask(macFull)

	// Revision 2: new settings, every machine value as it was.
	f2 := *f
	s2 := *f.Settings
	s2.Nameservers = []string{"10.10.0.54", "10.10.0.55"}
	s2.LeaseTime = 900
	f2.Settings = &s2
	if _, err := st.Apply("rev-2", &f2); err != nil {
		t.Fatal(err)
	}
	back := ask(macDefaults)
	if got := back.DNS(); !slices.EqualFunc(got, []net.IP{net.ParseIP("10.10.0.54"), net.ParseIP("10.10.0.55")}, net.IP.Equal) {
		t.Errorf("after a settings commit: DNS %v, want 10.10.0.54 and 10.10.0.55", got)
	}
	if got := back.IPAddressLeaseTime(0); got.Seconds() != 900 {
		t.Errorf("after a settings commit: lease %v, want 900 s", got)
	}

	// Revision 3: one machine changes its address.
	f3 := f2
	f3.Hardware = maps.Clone(f2.Hardware)
	hw := *f3.Hardware["m-full"]
	hw.Interfaces = slices.Clone(hw.Interfaces)
	hw.Interfaces[0].IP = "10.10.0.99/24"
	f3.Hardware["m-full"] = &hw
	if _, err := st.Apply("rev-3", &f3); err != nil {
		t.Fatal(err)
	}
	if got := ask(macFull).YourIPAddr.String(); got != "10.10.0.99" {
		t.Errorf("after an address commit: yiaddr %s, want 10.10.0.99", got)
	}
}

// TestMemoBounded: the memo never holds more than maxMemo entries, however
// many machines have asked.
func TestMemoBounded(t *testing.T) {
	t.Parallel()
	h := testHandler(t, testConfig(t, ModeReservation, everyMAC{}))
	for i := range maxMemo + 1000 {
		mac := net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		res, err := h.Handle(newRequest(t, dhcpv4.MessageTypeDiscover, mac.String()), ServerPort)
		if err != nil || res.Reply == nil {
			t.Fatalf("%s: no reply: %s %v", mac, res.Note, err)
		}
	}
	if n := len(h.memo.m); n == 0 || n > maxMemo {
		t.Errorf("memo holds %d entries, want 1 to %d", n, maxMemo)
	}
}

// everyMAC is a store in which every MAC has a machine: the memo's bound
// needs more machines than a test store holds comfortably.
type everyMAC struct{}

func (everyMAC) HardwareByMAC(_ memdb.WatchSet, mac string) (*schema.Hardware, error) {
	return &schema.Hardware{Name: mac, Interfaces: []schema.Interface{{MAC: mac, IP: "10.0.0.1/8"}}}, nil
}
func (everyMAC) Settings(memdb.WatchSet) (*schema.Settings, error) {
	return schema.DefaultSettings(), nil
}
func (everyMAC) Generation() uint64 { return 1 }

// TestMemoSavesLookups: within a generation a MAC is looked up in the
// store once; a new generation looks it up again.
func TestMemoSavesLookups(t *testing.T) {
	t.Parallel()
	f := testFleet()
	b := &countingBackend{Store: store.TestStore(t, f)}
	h := testHandler(t, testConfig(t, ModeReservation, b))
	for range 3 {
		if res, err := h.Handle(newRequest(t, dhcpv4.MessageTypeDiscover, macFull), ServerPort); err != nil || res.Reply == nil {
			t.Fatalf("no reply: %s %v", res.Note, err)
		}
	}
	if n := b.lookups.Load(); n != 1 {
		t.Errorf("three requests in one generation: %d store lookups, want 1", n)
	}
	f2 := *f
	f2.Settings = &schema.Settings{LeaseTime: 60}
	if _, err := b.Apply("rev-2", &f2); err != nil {
		t.Fatal(err)
	}
	if res, err := h.Handle(newRequest(t, dhcpv4.MessageTypeDiscover, macFull), ServerPort); err != nil || res.Reply == nil {
		t.Fatalf("no reply: %s %v", res.Note, err)
	}
	if n := b.lookups.Load(); n != 2 {
		t.Errorf("after a commit: %d store lookups, want 2", n)
	}
}

type countingBackend struct {
	*store.Store
	lookups atomic.Int64
}

func (b *countingBackend) HardwareByMAC(ws memdb.WatchSet, mac string) (*schema.Hardware, error) {
	b.lookups.Add(1)
	return b.Store.HardwareByMAC(ws, mac)
}
