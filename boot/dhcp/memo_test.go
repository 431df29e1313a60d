package dhcp

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"slices"
	"testing"

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
// many interfaces it has seen.
func TestMemoBounded(t *testing.T) {
	t.Parallel()
	st := testStore(t)
	h := testHandler(t, testConfig(t, ModeReservation, st))
	for i := range maxMemo + 1000 {
		iface := &schema.Interface{MAC: "02:00:00:00:00:01", IP: fmt.Sprintf("10.%d.%d.%d/8", i>>16&0xff, i>>8&0xff, i&0xff)}
		r := &request{iface: iface, backend: st}
		if e := h.ifaceOptions(r); e.addr.String() != iface.IP {
			t.Fatalf("entry %d: address %s, want %s", i, e.addr, iface.IP)
		}
	}
	if n := len(h.memo.m); n == 0 || n > maxMemo {
		t.Errorf("memo holds %d entries, want 1 to %d", n, maxMemo)
	}
}
