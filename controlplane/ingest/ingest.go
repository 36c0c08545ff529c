// Package ingest is the control plane's request-log ingester: a Kafka
// consumer group on gateway.request-logs.v1 that writes request_logs and
// meters usage_records, plus the maintenance of request_logs' daily
// partitions (creation ahead of time, retention by dropping).
//
// Delivery is at least once, the effect exactly once (DESIGN §7): a batch is
// stored in one transaction whose INSERT … ON CONFLICT DO NOTHING RETURNING
// yields only the rows that are new, and only those are metered; offsets are
// committed after that transaction commits. A crash between commit and
// offset commit redelivers the batch, which then changes nothing.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/kafkabatch"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// Defaults of Config.
const (
	DefaultGroupID       = "controlplane-request-logs"
	DefaultBatchSize     = 5000
	DefaultBatchWait     = 200 * time.Millisecond
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultDaysAhead     = 2
	DefaultMaintainEvery = time.Hour
)

// Config tunes a Worker. Zero values take the defaults.
type Config struct {
	// Brokers are the Kafka bootstrap brokers (required).
	Brokers []string
	// Topic is consumed; wire.TopicRequestLogs by default.
	Topic string
	// GroupID is the consumer group; DefaultGroupID by default. Every
	// control-plane replica joins it and gets a share of the partitions.
	GroupID string
	// BatchSize is the most messages stored per transaction.
	BatchSize int
	// BatchWait is how long a batch may wait to fill after its first message.
	BatchWait time.Duration
	// Retention is how long request logs are kept (whole days are dropped).
	Retention time.Duration
	// DaysAhead is how many days of partitions exist ahead of today.
	DaysAhead int
	// MaintainEvery is the period of partition maintenance.
	MaintainEvery time.Duration
	// LagEvery is how often the group's lag is read from Kafka; 10 s by
	// default.
	LagEvery time.Duration
	// Registerer receives the worker's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *zap.Logger
	// Now is the clock of partition maintenance and retention; time.Now by
	// default.
	Now func() time.Time
}

// RetentionEnv is the environment variable of the retention: a number of
// days ("30", "30d") or a Go duration ("720h").
const RetentionEnv = "REQUEST_LOG_RETENTION"

// MaxRetentionDays bounds the retention: a century is "keep them", and a
// day count past time.Duration's range (292 years) would wrap around to
// minutes and drop yesterday's logs.
const MaxRetentionDays = 36500

// ParseRetention parses a retention as RetentionEnv documents it.
func ParseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case err != nil || n > MaxRetentionDays:
			return 0, fmt.Errorf("retention %q: at most %d days (100 years)", s, MaxRetentionDays)
		case n < 1:
			return 0, fmt.Errorf("retention %q: must be at least one day", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("retention %q: want days (30, 30d) or a duration (720h)", s)
	}
	switch {
	case d < 24*time.Hour:
		return 0, fmt.Errorf("retention %q: must be at least one day", s)
	case d > MaxRetentionDays*24*time.Hour:
		return 0, fmt.Errorf("retention %q: at most %d days (100 years)", s, MaxRetentionDays)
	}
	return d, nil
}

// RetentionFromEnv is the retention set in RetentionEnv, or DefaultRetention.
func RetentionFromEnv() (time.Duration, error) {
	v := config.String(RetentionEnv, "")
	if v == "" {
		return DefaultRetention, nil
	}
	return ParseRetention(v)
}

// Worker consumes request logs into Postgres.
type Worker struct {
	db    *pgxpool.Pool
	cfg   Config
	parts *Partitions
	m     *metrics
	log   *zap.Logger
}

// New returns a worker writing to db.
func New(db *pgxpool.Pool, cfg Config) (*Worker, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("request log ingester: no kafka brokers configured")
	}
	if cfg.Topic == "" {
		cfg.Topic = wire.TopicRequestLogs
	}
	if cfg.GroupID == "" {
		cfg.GroupID = DefaultGroupID
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = DefaultBatchWait
	}
	switch {
	case cfg.Retention == 0:
		cfg.Retention = DefaultRetention
	case cfg.Retention < 24*time.Hour || cfg.Retention > MaxRetentionDays*24*time.Hour:
		return nil, fmt.Errorf("request log ingester: retention %s is not between one day and %d days", cfg.Retention, MaxRetentionDays)
	}
	if cfg.DaysAhead <= 0 {
		cfg.DaysAhead = DefaultDaysAhead
	}
	if cfg.MaintainEvery <= 0 {
		cfg.MaintainEvery = DefaultMaintainEvery
	}
	if cfg.LagEvery <= 0 {
		cfg.LagEvery = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Worker{
		db: db, cfg: cfg, m: m, log: cfg.Logger.Named("request_log_ingest"),
		parts: NewPartitions(db, cfg.Retention, cfg.DaysAhead, cfg.Now),
	}, nil
}

// Partitions is the worker's partition manager.
func (w *Worker) Partitions() *Partitions { return w.parts }

// Run consumes until ctx ends, then returns nil. Partition maintenance runs
// alongside, once at start and then every MaintainEvery.
func (w *Worker) Run(ctx context.Context) error {
	maintained := make(chan struct{})
	go func() {
		defer close(maintained)
		w.maintainLoop(ctx)
	}()
	defer func() { <-maintained }()
	// The lag is read from Kafka, not from the batches stored: it keeps
	// growing while storing is stuck, whichever replica holds a partition.
	lagged := make(chan struct{})
	go func() {
		defer close(lagged)
		kafkabatch.WatchLag(ctx, w.cfg.Brokers, w.cfg.GroupID, w.cfg.Topic, w.cfg.LagEvery,
			func(n int64) { w.m.lag.Set(float64(n)) },
			func(err error) { w.log.Debug("reading the consumer group's lag", zap.Error(err)) })
	}()
	defer func() { <-lagged }()

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        w.cfg.Brokers,
		GroupID:        w.cfg.GroupID,
		Topic:          w.cfg.Topic,
		MinBytes:       1,
		MaxBytes:       16 << 20,
		MaxWait:        250 * time.Millisecond,
		QueueCapacity:  kafkabatch.QueueCapacity,
		CommitInterval: 0, // synchronous: CommitMessages returns once committed
		StartOffset:    kafka.FirstOffset,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			w.log.Warn("kafka reader: " + fmt.Sprintf(msg, args...))
		}),
	})
	defer r.Close()
	w.log.Info("consuming request logs", zap.String("topic", w.cfg.Topic), zap.String("group", w.cfg.GroupID))

	// Fetching and decoding the next batch overlaps with storing this one.
	batches := make(chan batch, 1)
	fetched := make(chan struct{})
	go func() {
		defer close(fetched)
		defer close(batches)
		w.fetchLoop(ctx, r, batches)
	}()
	defer func() { <-fetched }()

	for b := range batches {
		if !w.handle(ctx, b) {
			return nil
		}
		// The batch is durable: commit even if ctx just ended, so that a
		// clean shutdown does not leave it to be redelivered. If the commit
		// fails, the redelivered batch changes nothing.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := r.CommitMessages(cctx, b.msgs...); err != nil && ctx.Err() == nil {
			w.log.Warn("committing request log offsets", zap.Error(err))
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// batch is what one transaction stores: the fetched messages (committed
// afterwards) and the rows decoded from them.
type batch struct {
	msgs []kafka.Message
	rows []row
}

func (w *Worker) fetchLoop(ctx context.Context, r *kafka.Reader, out chan<- batch) {
	for {
		msgs, err := kafkabatch.Fetch(ctx, r, w.cfg.BatchSize, w.cfg.BatchWait)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.log.Warn("fetching request logs", zap.Error(err))
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		b := batch{msgs: msgs}
		b.rows = w.decode(msgs)
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
	}
}

// handle stores a batch, retrying until it is durable. It returns false
// only when ctx ended first.
func (w *Worker) handle(ctx context.Context, b batch) bool {
	start, rows := time.Now(), b.rows
	backoff := 100 * time.Millisecond
	for {
		inserted, err := w.store(ctx, rows)
		if err == nil {
			w.m.rows.Add(float64(inserted))
			w.m.duplicates.Add(float64(int64(len(rows)) - inserted))
			w.m.batchSeconds.Observe(time.Since(start).Seconds())
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		w.m.errors.Inc()
		w.log.Warn("storing request logs; retrying", zap.Error(err), zap.Int("rows", len(rows)), zap.Duration("backoff", backoff))
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// store makes sure the partitions exist and writes rows. A batch refused
// for its data is written row by row, so one bad row cannot hold up the
// topic: the rows Postgres refuses are counted and skipped.
func (w *Worker) store(ctx context.Context, rows []row) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	days := map[string]time.Time{}
	for i := range rows {
		days[PartitionName(rows[i].CreatedAt)] = rows[i].CreatedAt
	}
	for _, t := range days {
		created, err := w.parts.Ensure(ctx, t)
		if err != nil {
			return 0, err
		}
		if created {
			w.m.partitionsCreated.Inc()
		}
	}
	inserted, err := w.write(ctx, rows)
	if err == nil {
		return inserted, nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return 0, err
	}
	if pgErr.Code == "23514" { // no partition for a row: dropped under us
		w.parts.forget()
		return 0, err
	}
	if !strings.HasPrefix(pgErr.Code, "22") && !strings.HasPrefix(pgErr.Code, "23") {
		return 0, err
	}
	w.log.Warn("a request log batch was refused; storing it row by row", zap.Error(err))
	inserted = 0
	for i := range rows {
		n, err := w.write(ctx, rows[i:i+1])
		if err != nil {
			if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23")) {
				w.m.skipped.WithLabelValues("refused").Inc()
				w.log.Warn("skipping a request log Postgres refused", zap.String("request_id", rows[i].RequestID), zap.Error(err))
				continue
			}
			return inserted, err // rows already written are duplicates on retry
		}
		inserted += n
	}
	return inserted, nil
}

// decode turns messages into rows, skipping (and counting) what cannot be
// stored: malformed values, and rows outside the partitions' range.
func (w *Worker) decode(msgs []kafka.Message) []row {
	now := w.cfg.Now()
	rows := make([]row, 0, len(msgs))
	for _, m := range msgs {
		var l wire.RequestLog
		if err := json.Unmarshal(m.Value, &l); err != nil {
			w.skip("malformed", m, err.Error())
			continue
		}
		r, problem := toRow(&l)
		if problem != "" {
			w.skip("malformed", m, problem)
			continue
		}
		switch {
		case w.parts.expired(r.CreatedAt, now):
			w.skip("expired", m, "older than the retention")
			continue
		case w.parts.tooNew(r.CreatedAt, now):
			w.skip("future", m, "time too far in the future")
			continue
		}
		rows = append(rows, r)
	}
	return rows
}

func (w *Worker) skip(reason string, m kafka.Message, detail string) {
	w.m.skipped.WithLabelValues(reason).Inc()
	if c := w.log.Check(zap.DebugLevel, "skipping request log"); c != nil {
		c.Write(zap.String("reason", reason), zap.String("detail", detail),
			zap.Int("partition", m.Partition), zap.Int64("offset", m.Offset))
	}
}

// Bounds of stored strings. The gateway already applies tighter ones; these
// protect the table from any other producer.
const (
	maxID      = 128
	maxShort   = 255
	maxPath    = 4096
	maxHeaders = 64
	maxBody    = 64 << 10
)

// toRow validates and cleans a message. Every string is made valid UTF-8
// without control characters (Postgres refuses NUL in text and jsonb) and
// passed through redaction again, in case a producer let a key through.
func toRow(l *wire.RequestLog) (row, string) {
	switch {
	case l.V < 1:
		return row{}, "missing schema version"
	case l.RequestID == "":
		return row{}, "missing request_id"
	case l.Method == "":
		return row{}, "missing method"
	case l.Time <= 0 || l.Time > 1<<53:
		return row{}, "time out of range"
	case l.Status < 0 || l.Status > 999:
		return row{}, "status out of range"
	}
	r := row{
		RequestID:       clean(l.RequestID, maxID),
		CreatedAt:       time.UnixMicro(l.Time).UTC(),
		OrganizationID:  clean(l.OrganizationID, maxID),
		Livemode:        l.Livemode,
		APIKeyID:        clean(l.APIKeyID, maxID),
		Method:          clean(l.Method, 32),
		Route:           clean(l.Route, maxPath),
		Path:            clean(l.Path, maxPath),
		Status:          int32(l.Status),
		DurationUS:      max(l.DurationUS, 0),
		UpstreamUS:      max(l.UpstreamUS, 0),
		BytesIn:         max(l.BytesIn, 0),
		BytesOut:        max(l.BytesOut, 0),
		ClientIP:        clean(l.ClientIP, 64),
		UserAgent:       clean(l.UserAgent, redact.MaxUserAgent),
		APIVersion:      clean(l.APIVersion, 32),
		IdempotencyKey:  clean(l.IdempotencyKey, maxShort),
		Replayed:        l.Replayed,
		RateLimit:       clean(l.RateLimit, maxShort),
		ErrorType:       clean(l.ErrorType, 64),
		ErrorCode:       clean(l.ErrorCode, 64),
		ErrorMessage:    clean(l.ErrorMessage, redact.MaxErrorMessage),
		ErrorParam:      clean(l.ErrorParam, redact.MaxErrorParam),
		AuthRefused:     l.AuthRefused,
		RequestHeaders:  cleanHeaders(l.RequestHeaders),
		ResponseHeaders: cleanHeaders(l.ResponseHeaders),
		RequestBody:     cleanBody(l.RequestBody),
		ResponseBody:    cleanBody(l.ResponseBody),
	}
	return r, ""
}

var second = redact.New(redact.Config{})

func clean(s string, max int) string {
	if s == "" {
		return s
	}
	return redact.Text(second.String(s), max)
}

// cleanHeaders cleans a header map and encodes it as the JSON object
// stored in jsonb, here rather than in the COPY so that the work overlaps
// with storing the previous batch.
func cleanHeaders(h map[string]string) json.RawMessage {
	if len(h) == 0 {
		return nil
	}
	b := make([]byte, 0, 64*len(h))
	b = append(b, '{')
	n := 0
	for k, v := range h {
		if n == maxHeaders {
			break
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, clean(k, 128))
		b = append(b, ':')
		b = appendJSONString(b, clean(v, redact.MaxHeaderValue))
		n++
	}
	return append(b, '}')
}

// appendJSONString appends s, valid UTF-8, as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func cleanBody(s string) *string {
	if s == "" {
		return nil
	}
	b := redact.Block(second.String(s), maxBody)
	return &b
}

func (w *Worker) maintainLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.MaintainEvery)
	defer t.Stop()
	for {
		created, dropped, err := w.parts.Maintain(ctx)
		w.m.partitionsCreated.Add(float64(len(created)))
		w.m.partitionsDropped.Add(float64(len(dropped)))
		switch {
		case err != nil && ctx.Err() == nil:
			w.log.Warn("maintaining request log partitions", zap.Error(err))
		case len(created) > 0 || len(dropped) > 0:
			w.log.Info("request log partitions maintained", zap.Strings("created", created), zap.Strings("dropped", dropped))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
