package runner

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gitmetal/gitmetal/runner/journal"
	"github.com/gitmetal/gitmetal/runner/protocol"
)

// Limits of the people's API.
const (
	// DefaultRunList is how many runs GET /v1/runs lists without ?limit=.
	DefaultRunList = 100
	// MaxRunList caps ?limit=.
	MaxRunList = 10000
	// logPage is how many log lines one journal read returns.
	logPage = 1000
)

// Register adds the agent protocol and the people's API to mux:
//
//	POST /v1/agent/hello                          agent: inventory, current run
//	GET  /v1/agent/next?run=&wait=30s             agent: long poll for an action
//	POST /v1/agent/runs/{run}/actions/{n}/status  agent: status of an attempt
//	POST /v1/agent/runs/{run}/actions/{n}/logs    agent: a batch of log lines
//	GET  /v1/runs?machine=&workflow=&state=&active=1&limit=100
//	                                              runs, newest first
//	GET  /v1/runs/{id}                            one run: actions, timings, messages
//	GET  /v1/runs/{id}/logs?follow=1&after=N&format=text
//	                                              its log as JSON lines (or text);
//	                                              follow streams until the run ends
//	GET  /v1/machines/{name}/inventory            what the machine's agent reported
//
// Register puts both halves on one mux; a daemon with a listener for the
// machines apart from its API puts RegisterAgent on the machines' one.
func (r *Runner) Register(mux *http.ServeMux) {
	r.RegisterAgent(mux)
	r.RegisterAPI(mux)
}

// RegisterAgent registers the agent protocol (/v1/agent/...): what the
// installer's agent calls at its gitmetal.server URL, with its per-boot
// token.
func (r *Runner) RegisterAgent(mux *http.ServeMux) {
	mux.HandleFunc("POST "+protocol.PathHello, r.agent(r.hello))
	mux.HandleFunc("GET "+protocol.PathNext, r.agent(r.next))
	mux.HandleFunc("POST /v1/agent/runs/{run}/actions/{n}/status", r.agent(r.status))
	mux.HandleFunc("POST /v1/agent/runs/{run}/actions/{n}/logs", r.agent(r.postLogs))
}

// RegisterAPI registers what people and tools read: runs, their logs and
// the machines' inventories.
func (r *Runner) RegisterAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/runs", r.recovered(r.listRuns))
	mux.HandleFunc("GET /v1/runs/{id}", r.recovered(r.getRun))
	mux.HandleFunc("GET /v1/runs/{id}/logs", r.recovered(r.getLogs))
	mux.HandleFunc("GET /v1/machines/{name}/inventory", r.recovered(r.getInventory))
}

// Runs returns up to limit runs, newest first, that keep returns true for
// (nil keeps all).
func (r *Runner) Runs(limit int, keep func(*protocol.Run) bool) ([]protocol.Run, error) {
	out := []protocol.Run{}
	err := r.j.View(func(tx *journal.Tx) error {
		return tx.Runs(func(run *protocol.Run) bool {
			if keep == nil || keep(run) {
				out = append(out, *run)
			}
			return len(out) < limit
		})
	})
	return out, err
}

// RunByID returns run id; the error matches journal.ErrNotFound when
// there is none.
func (r *Runner) RunByID(id string) (*protocol.Run, error) {
	var run *protocol.Run
	err := r.j.View(func(tx *journal.Tx) error {
		var err error
		run, err = tx.Run(id)
		return err
	})
	return run, err
}

func (r *Runner) listRuns(w http.ResponseWriter, req *http.Request) error {
	q := req.URL.Query()
	limit := DefaultRunList
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return errorf(http.StatusBadRequest, "limit %q: want a positive number", s)
		}
		limit = min(n, MaxRunList)
	}
	machine, workflow, state := q.Get("machine"), q.Get("workflow"), protocol.RunState(q.Get("state"))
	active := q.Get("active") == "1" || q.Get("active") == "true"
	runs, err := r.Runs(limit, func(run *protocol.Run) bool {
		return (machine == "" || run.Hardware == machine) &&
			(workflow == "" || run.Workflow == workflow) &&
			(state == "" || run.State == state) &&
			(!active || run.State.Active())
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, runs)
	return nil
}

func (r *Runner) getRun(w http.ResponseWriter, req *http.Request) error {
	run, err := r.RunByID(req.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}

func (r *Runner) getInventory(w http.ResponseWriter, req *http.Request) error {
	var inv *protocol.MachineInventory
	err := r.j.View(func(tx *journal.Tx) error {
		var err error
		inv, err = tx.Inventory(req.PathValue("name"))
		return err
	})
	if err != nil {
		return err
	}
	if inv == nil {
		return errorf(http.StatusNotFound, "no inventory of machine %q", req.PathValue("name"))
	}
	writeJSON(w, http.StatusOK, inv)
	return nil
}

// getLogs writes a run's log as JSON lines (or text with ?format=text).
// With ?follow=1 it goes on writing lines as they come and ends once the
// run has ended and every line is written, or when the client leaves.
func (r *Runner) getLogs(w http.ResponseWriter, req *http.Request) error {
	q := req.URL.Query()
	id := req.PathValue("id")
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	text := q.Get("format") == "text"
	var after uint64
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return errorf(http.StatusBadRequest, "after %q: want a line number", s)
		}
		after = n
	}
	if _, err := r.RunByID(id); err != nil {
		return err
	}
	if text {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for {
		wake := r.logs.wait()
		ended := r.changed.wait()
		var lines []protocol.LogLine
		var final bool
		err := r.j.View(func(tx *journal.Tx) error {
			run, err := tx.Run(id)
			if err != nil {
				return err
			}
			final = run.State.Final()
			lines, err = tx.Logs(id, after, logPage)
			return err
		})
		if err != nil {
			// The headers are out: all that is left is to stop.
			r.log.Error().Err(err).Str("run", id).Msg("read logs")
			return nil
		}
		for _, l := range lines {
			if text {
				_, err = fmt.Fprintln(w, l.String())
			} else {
				err = enc.Encode(l)
			}
			if err != nil {
				return nil
			}
			after = l.Seq
		}
		if len(lines) == logPage {
			continue
		}
		if !follow || final {
			return nil
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		select {
		case <-wake:
		case <-ended:
		case <-req.Context().Done():
			return nil
		case <-r.quit:
			return nil
		}
	}
}
