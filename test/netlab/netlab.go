// Package netlab builds throwaway network labs out of Linux network
// namespaces for tests and benchmark programs: namespaces, veth pairs,
// bridges and taps inside them, addresses, commands run inside a namespace,
// and sockets opened inside a namespace by the calling process, so that an
// in-process server can listen where a real client (udhcpc, dhclient,
// perfdhcp, tftp, curl, QEMU) run with `ip netns exec` can reach it.
//
// Design notes and rules:
//
//   - Everything is made inside namespaces that netlab creates. netlab never
//     creates, changes or reads an interface of the host's namespace: veth
//     ends are created directly in their target namespaces. It adds no
//     default route and no NAT, so traffic never leaves the lab.
//   - Names are unique (prefix + random hex, see Name), so tests run in
//     parallel and next to other tests' labs. Interface names are at most
//     15 bytes (IFNAMSIZ-1).
//   - Deleting a namespace deletes the interfaces in it (and the peer of
//     every veth end in it), so cleanup is one `ip netns del` per namespace.
//   - It needs root and iproute2's `ip`. Require (and NewNetns, which calls
//     it) skips the test when either is missing, and fails it when CI=true,
//     so CI never passes a test that did not run.
//
// The API has two layers. The core works without a testing.TB and returns
// errors, for programs such as benchmarks that clean up themselves:
//
//	ns, err := netlab.CreateNetns(netlab.Name("bench"))  // ip netns add; lo up
//	defer ns.Delete()
//	err = netlab.AddVeth(srv, "srv0", cli, "cli0")       // one end in each
//	err = ns.AddAddr("srv0", "10.0.0.1/24")              // and ns.SetUp, ns.SetMAC,
//	                                                     // ns.AddBridge, ns.AddTap, ns.SetMaster
//	out, err := ns.Run(ctx, "udhcpc", "-i", "cli0", ...) // ip netns exec NS ...
//	cmd := ns.Command(ctx, "dhclient", ...)              // an *exec.Cmd to start yourself
//	conn, err := ns.ListenPacket("udp4", ":67")          // a socket inside the namespace
//	err = ns.Do(func() error { ... })                    // any code on a thread inside it
//
// The test layer names things uniquely, registers their deletion with
// t.Cleanup and fails the test on error:
//
//	netlab.Require(t)
//	ns := netlab.NewNetns(t, "srv")                      // unique name, deleted at cleanup
//	a, b := netlab.NewVeth(t, srv, cli, "v")             // unique names, both ends up
//	p := netlab.NewPair(t, "dhcp")                       // two namespaces joined by a veth
//	netlab.Must(t, ns.AddAddr(a, "10.1.2.1/24"))
//
// Sockets keep the namespace they were created in, whichever thread uses
// them later: ListenPacket, Listen and Do lock a fresh goroutine to its OS
// thread, switch that thread into the namespace (setns), run, switch back
// and unlock. If switching back fails the thread is left locked, so the Go
// runtime retires it instead of reusing a thread in the wrong namespace.
// Code passed to Do must not start goroutines that expect to run inside the
// namespace: only the calling thread is switched.
package netlab
