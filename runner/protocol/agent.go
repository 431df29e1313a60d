package protocol

import (
	"strconv"
	"time"

	"github.com/gitmetal/gitmetal/schema"
)

// Paths of the agent protocol.
const (
	PathHello = "/v1/agent/hello"
	PathNext  = "/v1/agent/next"
)

// StatusPath is the path an agent reports action n of run to.
func StatusPath(run string, n int) string {
	return "/v1/agent/runs/" + run + "/actions/" + strconv.Itoa(n) + "/status"
}

// LogsPath is the path an agent sends action n's log lines to.
func LogsPath(run string, n int) string {
	return "/v1/agent/runs/" + run + "/actions/" + strconv.Itoa(n) + "/logs"
}

// Limits the runner enforces on agent requests.
const (
	// MaxBody is the largest request body the runner reads.
	MaxBody = 4 << 20
	// MaxLinesPerBatch is the most lines one LogBatch may carry.
	MaxLinesPerBatch = 5000
	// MaxLineBytes is the longest line kept; longer lines are cut.
	MaxLineBytes = 16 << 10
	// MaxWait is the longest long poll the runner grants.
	MaxWait = 2 * time.Minute
)

// Hello is what an agent says when it starts: who it is and what the
// machine has.
type Hello struct {
	// MACs are the machine's NIC addresses; at least one must belong to
	// the machine the token was issued for.
	MACs []string `json:"macs"`
	// Agent identifies this agent process (random per start); it makes log
	// batches of a restarted agent distinct from its predecessor's.
	Agent     string    `json:"agent"`
	Version   string    `json:"version,omitempty"`
	Inventory Inventory `json:"inventory"`
}

// HelloReply names the machine's current run, if it has one.
type HelloReply struct {
	Machine string   `json:"machine"`
	Run     *RunInfo `json:"run,omitempty"`
}

// RunInfo is what an agent needs to know about a run.
type RunInfo struct {
	ID       string   `json:"id"`
	Workflow string   `json:"workflow"`
	State    RunState `json:"state"`
	Actions  int      `json:"actions"`
}

// Next answers GET /v1/agent/next. With Action set the agent executes it;
// with Done set the run (Run) has ended in RunState and the agent stops;
// with neither, nothing is ready yet and the agent asks again.
type Next struct {
	Run      string      `json:"run,omitempty"`
	RunState RunState    `json:"runState,omitempty"`
	Done     bool        `json:"done,omitempty"`
	Message  string      `json:"message,omitempty"`
	Action   *Assignment `json:"action,omitempty"`
}

// Assignment is an action handed to an agent. Handing the same action and
// attempt again (after an agent or runner restart) means "carry on with it".
type Assignment struct {
	Index   int         `json:"index"`
	Attempt int         `json:"attempt"`
	Step    schema.Step `json:"step"`
	// OnFailure is set for a step that handles another action's failure.
	OnFailure bool `json:"onFailure,omitempty"`
	// Deadline is when the runner will mark this attempt timed out.
	Deadline time.Time `json:"deadline,omitzero"`
}

// StatusReport is what an agent says about one attempt of an action.
// Running means started (a background action then counts as success) and,
// repeated, is the heartbeat that carries progress. Success, Failed and
// Timeout end the attempt.
type StatusReport struct {
	Attempt  int         `json:"attempt"`
	State    ActionState `json:"state"`
	Message  string      `json:"message,omitempty"`
	ExitCode *int        `json:"exitCode,omitempty"`
	Progress *Progress   `json:"progress,omitempty"`
	// Time is the agent's clock when it saw the state; informational.
	Time time.Time `json:"time,omitzero"`
}

// LogBatch carries log lines of one attempt of an action. Seq numbers are
// per agent instance, consecutive, starting at 0: the line Lines[i] has
// sequence First+i. A batch whose lines the runner already has is
// acknowledged without storing them again.
type LogBatch struct {
	Agent   string     `json:"agent"`
	Attempt int        `json:"attempt"`
	First   uint64     `json:"first"`
	Lines   []LineText `json:"lines"`
}

// LineText is one line as the agent sends it.
type LineText struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
}

// Ack answers a status report or log batch. Stop tells the agent to stop
// the attempt it reported on now: it timed out, the run timed out, or it
// is no longer the current attempt. A workflow removed from git never
// stops an action midway; its run ends after the action.
type Ack struct {
	Stop   bool   `json:"stop,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Stored is how many new log lines the batch added (0 for a repeat).
	Stored int `json:"stored,omitempty"`
}

// Error is the JSON body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Inventory is what the agent found on the machine. Every part is best
// effort: an agent that cannot read something leaves it empty.
type Inventory struct {
	Hostname string `json:"hostname,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	CPU      CPU    `json:"cpu"`
	// MemoryBytes is MemTotal.
	MemoryBytes uint64 `json:"memoryBytes"`
	Disks       []Disk `json:"disks,omitempty"`
	NICs        []NIC  `json:"nics,omitempty"`
}

// CPU summarises the processors.
type CPU struct {
	Model   string `json:"model,omitempty"`
	Threads int    `json:"threads"`
	// Cores is the count of distinct (physical id, core id) pairs, or 0
	// when the kernel does not say.
	Cores   int `json:"cores,omitempty"`
	Sockets int `json:"sockets,omitempty"`
}

// Disk is a block device.
type Disk struct {
	// Name is the kernel name ("sda", "nvme0n1").
	Name      string `json:"name"`
	SizeBytes uint64 `json:"sizeBytes"`
	Model     string `json:"model,omitempty"`
	Serial    string `json:"serial,omitempty"`
	// ByID are the /dev/disk/by-id links that point at the whole disk.
	ByID       []string `json:"byId,omitempty"`
	Rotational bool     `json:"rotational,omitempty"`
	Removable  bool     `json:"removable,omitempty"`
}

// NIC is a network interface.
type NIC struct {
	Name      string `json:"name"`
	MAC       string `json:"mac,omitempty"`
	Driver    string `json:"driver,omitempty"`
	State     string `json:"state,omitempty"`
	SpeedMbps int    `json:"speedMbps,omitempty"`
	MTU       int    `json:"mtu,omitempty"`
}

// MachineInventory is an inventory as the runner keeps it.
type MachineInventory struct {
	Machine   string    `json:"machine"`
	MACs      []string  `json:"macs"`
	Agent     string    `json:"agent"`
	Version   string    `json:"version,omitempty"`
	Reported  time.Time `json:"reported"`
	Inventory Inventory `json:"inventory"`
}
