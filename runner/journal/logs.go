package journal

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// runLogs returns run id's log bucket, creating it when create is set; nil
// when it does not exist and create is not set.
func (t *Tx) runLogs(id string, create bool) (*bolt.Bucket, error) {
	key, ok := runKey(id)
	if !ok {
		return nil, fmt.Errorf("logs of run %q: %w", id, ErrNotFound)
	}
	logs := t.tx.Bucket(bucketLogs)
	if !create {
		return logs.Bucket(key), nil
	}
	b, err := logs.CreateBucketIfNotExists(key)
	if err != nil {
		return nil, fmt.Errorf("logs of run %s: %w", id, err)
	}
	for _, name := range [][]byte{bucketLines, bucketCursors} {
		if _, err := b.CreateBucketIfNotExists(name); err != nil {
			return nil, fmt.Errorf("logs of run %s: %w", id, err)
		}
	}
	return b, nil
}

// AppendLogs adds lines that one sender (key: an agent instance, action
// and attempt) numbered from first on to run id's log, and returns how many
// it stored. Lines whose numbers the sender already sent are dropped, so a
// batch retried after a lost answer is stored once. Each stored line gets
// the run's next Seq. Once the log holds limit lines, one line saying so is
// added and later lines are dropped (still counted as sent).
func (t *Tx) AppendLogs(id, key string, first uint64, lines []protocol.LogLine, limit uint64) (int, error) {
	b, err := t.runLogs(id, true)
	if err != nil {
		return 0, err
	}
	cursors := b.Bucket(bucketCursors)
	var next uint64
	if v := cursors.Get([]byte(key)); len(v) == 8 {
		next = binary.BigEndian.Uint64(v)
	}
	skip := 0
	if first < next {
		if next-first >= uint64(len(lines)) {
			return 0, nil
		}
		skip = int(next - first)
	}
	stored := 0
	lb := b.Bucket(bucketLines)
	for i := skip; i < len(lines); i++ {
		switch seq := lb.Sequence(); {
		case seq > limit:
			continue
		case seq == limit:
			l := lines[i]
			l.Stream = protocol.StreamRunner
			l.Text = fmt.Sprintf("log limit of %d lines reached: later lines are dropped", limit)
			if err := putLine(lb, &l); err != nil {
				return 0, fmt.Errorf("logs of run %s: %w", id, err)
			}
			continue
		}
		if err := putLine(lb, &lines[i]); err != nil {
			return 0, fmt.Errorf("logs of run %s: %w", id, err)
		}
		stored++
	}
	if err := cursors.Put([]byte(key), u64(first+uint64(len(lines)))); err != nil {
		return 0, fmt.Errorf("logs of run %s: %w", id, err)
	}
	return stored, nil
}

// AppendNote adds one line of the runner's own to run id's log.
func (t *Tx) AppendNote(id string, line protocol.LogLine) error {
	b, err := t.runLogs(id, true)
	if err != nil {
		return err
	}
	if err := putLine(b.Bucket(bucketLines), &line); err != nil {
		return fmt.Errorf("logs of run %s: %w", id, err)
	}
	return nil
}

func putLine(b *bolt.Bucket, l *protocol.LogLine) error {
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	l.Seq = seq
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return b.Put(u64(seq), v)
}

// Logs returns up to limit lines of run id's log with Seq greater than
// after, in order. A run without lines has an empty log.
func (t *Tx) Logs(id string, after uint64, limit int) ([]protocol.LogLine, error) {
	b, err := t.runLogs(id, false)
	if err != nil || b == nil {
		return nil, err
	}
	var out []protocol.LogLine
	c := b.Bucket(bucketLines).Cursor()
	for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
		var l protocol.LogLine
		if err := json.Unmarshal(v, &l); err != nil {
			return nil, fmt.Errorf("logs of run %s line %d: %w", id, binary.BigEndian.Uint64(k), err)
		}
		out = append(out, l)
	}
	return out, nil
}
