package outbox

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ErrSpoolFull is returned when appending would exceed the spool's limit.
var ErrSpoolFull = errors.New("outbox: spool full")

// spool is an append-only queue of messages on disk, in numbered segment
// files. Records are length-prefixed and checksummed, so a record torn by a
// crash mid-append is detected and dropped instead of corrupting what follows.
//
// Layout of a record: u32 length of the rest, u32 CRC-32 of the rest, then
// u16 topic length, topic, u32 key length, key, value.
type spool struct {
	dir     string
	max     int64 // bytes
	segSize int64 // roll to a new segment past this size

	mu      sync.Mutex
	segs    []int64 // segment numbers, oldest first
	w       *os.File
	wSize   int64
	size    int64 // bytes in all segments, minus what was consumed
	headOff int64 // read offset in segs[0] already sent
	nextSeq int64 // number of the next segment; never reused
	cursor  *os.File
	lock    *os.File // lockDir's, held until close
}

// cursorFile holds "<segment> <offset>": everything before that offset of
// that segment, and every segment numbered lower, has been sent. It is
// rewritten in place after every send (fixed width, so one pwrite replaces
// it whole) and before a sent segment is deleted, so a crash in between
// leaves a file the next start knows to delete rather than send again.
const cursorFile = "sent"

// legacyCursorFile is the cursor of earlier builds: "<segment> <offset>",
// trusted only for the segment it names (they reused segment numbers).
const legacyCursorFile = "cursor"

// reuseBelow is the size under which a fully sent live segment is kept and
// appended to, rather than deleted and created again: in write-through mode
// every send drains it, and the churn cost more than the sends.
const reuseBelow = 1 << 20

func openSpool(dir string, limit, segSize int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool dir: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &spool{dir: dir, max: limit, segSize: segSize, lock: lock}
	entries, err := os.ReadDir(dir)
	if err != nil {
		s.close()
		return nil, err
	}
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".seg"); ok {
			if seq, err := strconv.ParseInt(n, 10, 64); err == nil {
				s.segs = append(s.segs, seq)
				if fi, err := e.Info(); err == nil {
					s.size += fi.Size()
				}
			}
		}
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i] < s.segs[j] })
	s.nextSeq = 1
	if len(s.segs) > 0 {
		s.nextSeq = s.segs[len(s.segs)-1] + 1
	}
	var seq, off int64
	if b, err := os.ReadFile(filepath.Join(dir, cursorFile)); err == nil {
		if _, err := fmt.Sscanf(string(b), "%d %d", &seq, &off); err == nil {
			// Segments below the cursor were sent; a crash kept them.
			for len(s.segs) > 0 && s.segs[0] < seq {
				s.size -= s.fileSize(s.segs[0])
				_ = os.Remove(s.segPath(s.segs[0]))
				s.segs = s.segs[1:]
			}
			s.nextSeq = max(s.nextSeq, seq)
		}
	} else if b, err := os.ReadFile(filepath.Join(dir, legacyCursorFile)); err == nil {
		_, _ = fmt.Sscanf(string(b), "%d %d", &seq, &off)
	}
	if len(s.segs) > 0 && s.segs[0] == seq {
		s.headOff = min(max(off, 0), s.fileSize(seq))
		s.size -= s.headOff
	}
	return s, nil
}

func (s *spool) segPath(seq int64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%012d.seg", seq))
}

// Len reports the bytes waiting in the spool.
func (s *spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

func (s *spool) empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size <= 0
}

// append writes msgs at the tail. It writes all of them or, when the limit
// would be passed, as many as fit and ErrSpoolFull.
func (s *spool) append(msgs []Message) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []byte
	written, pending := 0, 0 // messages on disk; messages in buf
	flush := func() error {
		if err := s.flushLocked(buf); err != nil {
			return err
		}
		written, pending, buf = written+pending, 0, buf[:0]
		return nil
	}
	for _, m := range msgs {
		rec := encode(m)
		if s.size+int64(len(buf)+len(rec)) > s.max {
			if err := flush(); err != nil {
				return written, err
			}
			return written, ErrSpoolFull
		}
		if s.w == nil || s.wSize+int64(len(buf)+len(rec)) > s.segSize {
			if err := flush(); err != nil {
				return written, err
			}
			if err := s.rollLocked(); err != nil {
				return written, err
			}
		}
		buf = append(buf, rec...)
		pending++
	}
	err := flush() // counts what it wrote
	return written, err
}

// flushLocked writes buf at the end of the live segment, whole or not at
// all: a short write is cut off again, so that no torn record sits in
// front of the records appended after it.
func (s *spool) flushLocked(buf []byte) error {
	if len(buf) == 0 || s.w == nil {
		return nil
	}
	n, err := s.w.Write(buf)
	if err != nil {
		if n > 0 {
			if terr := s.w.Truncate(s.wSize); terr != nil {
				// The tail cannot be repaired: this segment ends at the
				// tear (counted, as it is on disk), and the next records
				// go to a new one.
				s.wSize += int64(n)
				s.size += int64(n)
				_ = s.w.Close()
				s.w = nil
			}
		}
		return fmt.Errorf("writing spool: %w", err)
	}
	s.wSize += int64(n)
	s.size += int64(n)
	return nil
}

func (s *spool) rollLocked() error {
	if s.w != nil {
		_ = s.w.Sync()
		_ = s.w.Close()
		s.w = nil // a failed open below leaves no closed file to write to
	}
	seq := s.nextSeq
	f, err := os.OpenFile(s.segPath(seq), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("creating spool segment: %w", err)
	}
	s.nextSeq++
	s.segs = append(s.segs, seq)
	s.w, s.wSize = f, 0
	return nil
}

// sync makes appended records durable against a machine crash.
func (s *spool) sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil {
		_ = s.w.Sync()
	}
}

// position marks how far peek read: the head segment, the offset in it, and
// whether the segment was read to its end (so commit can delete it).
type position struct {
	seq, off int64
	segDone  bool
}

// live reports whether seq is the segment being appended to. Reads of it
// stop at its last whole append; in every other segment a short or corrupt
// record is debris of a crash and ends the segment.
func (s *spool) liveLocked(seq int64) bool {
	return s.w != nil && len(s.segs) > 0 && s.segs[len(s.segs)-1] == seq
}

// peek reads up to n records from the head without consuming them.
func (s *spool) peek(n, maxBytes int) ([]Message, position, error) {
	s.mu.Lock()
	if len(s.segs) == 0 {
		s.mu.Unlock()
		return nil, position{}, nil
	}
	seq, off := s.segs[0], s.headOff
	live := s.liveLocked(seq)
	end := s.wSize // of the live segment: only whole appends are read
	s.mu.Unlock()

	f, err := os.Open(s.segPath(seq))
	if err != nil {
		return nil, position{}, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, position{}, err
	}
	var src io.Reader = f
	if live {
		src = io.LimitReader(f, end-off)
	}
	r := bufio.NewReaderSize(src, 64<<10)
	var msgs []Message
	bytes := 0
	for len(msgs) < n {
		m, size, err := decode(r)
		if err != nil {
			return msgs, position{seq: seq, off: off, segDone: !live}, nil
		}
		if bytes += len(m.Key) + len(m.Value); bytes > maxBytes && len(msgs) > 0 {
			break // the next send starts with it
		}
		msgs = append(msgs, m)
		off += size
	}
	return msgs, position{seq: seq, off: off}, nil
}

// commit consumes everything up to p.
func (s *spool) commit(p position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.segs) == 0 || s.segs[0] != p.seq {
		return nil
	}
	var sent int64 // a segment to delete once the cursor says it was sent
	switch {
	case p.segDone:
		s.size -= s.fileSize(p.seq) - s.headOff
		s.segs = s.segs[1:]
		s.headOff = 0
		sent = p.seq
	case s.liveLocked(p.seq) && p.off >= s.wSize && s.wSize >= reuseBelow:
		// Fully drained: close and delete so the spool does not grow forever.
		_ = s.w.Close()
		s.w = nil
		s.segs = nil
		s.headOff, s.size = 0, 0
		sent = p.seq
	default:
		s.size -= p.off - s.headOff
		s.headOff = p.off
	}
	s.size = max(s.size, 0)
	head := s.nextSeq // no segment left: everything before the next was sent
	if len(s.segs) > 0 {
		head = s.segs[0]
	}
	if s.cursor == nil {
		// Not truncated: every cursor written is as long as any before it.
		f, err := os.OpenFile(filepath.Join(s.dir, cursorFile), os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		s.cursor = f
		_ = os.Remove(filepath.Join(s.dir, legacyCursorFile))
	}
	_, err := s.cursor.WriteAt(fmt.Appendf(nil, "%20d %20d\n", head, s.headOff), 0)
	if sent != 0 {
		_ = os.Remove(s.segPath(sent))
	}
	return err
}

func (s *spool) fileSize(seq int64) int64 {
	fi, err := os.Stat(s.segPath(seq))
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (s *spool) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil {
		_ = s.w.Sync()
		_ = s.w.Close()
		s.w = nil
	}
	if s.cursor != nil {
		_ = s.cursor.Close()
		s.cursor = nil
	}
	if s.lock != nil {
		_ = s.lock.Close()
		s.lock = nil
	}
}

var errTorn = errors.New("outbox: torn record")

func encode(m Message) []byte {
	body := make([]byte, 0, 2+len(m.Topic)+4+len(m.Key)+len(m.Value))
	body = binary.BigEndian.AppendUint16(body, uint16(len(m.Topic)))
	body = append(body, m.Topic...)
	body = binary.BigEndian.AppendUint32(body, uint32(len(m.Key)))
	body = append(body, m.Key...)
	body = append(body, m.Value...)
	rec := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint32(rec[0:4], uint32(len(body)))
	binary.BigEndian.PutUint32(rec[4:8], crc32.ChecksumIEEE(body))
	return append(rec, body...)
}

func decode(r *bufio.Reader) (Message, int64, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Message{}, 0, errTorn
		}
		return Message{}, 0, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n > 64<<20 {
		return Message{}, 0, errTorn
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Message{}, 0, errTorn
	}
	if crc32.ChecksumIEEE(body) != binary.BigEndian.Uint32(hdr[4:8]) || len(body) < 6 {
		return Message{}, 0, errTorn
	}
	tl := int(binary.BigEndian.Uint16(body))
	if 2+tl+4 > len(body) {
		return Message{}, 0, errTorn
	}
	topic := string(body[2 : 2+tl])
	kl := int(binary.BigEndian.Uint32(body[2+tl:]))
	if 6+tl+kl > len(body) {
		return Message{}, 0, errTorn
	}
	key := body[6+tl : 6+tl+kl]
	return Message{Topic: topic, Key: key, Value: body[6+tl+kl:]}, int64(8 + n), nil
}
