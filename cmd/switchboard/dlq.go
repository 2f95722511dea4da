package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	_ "github.com/switchboard-go/switchboard/bridge/all" // every backend, for dlq replay and health
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/deadletter/pgstore"
)

// dlqUsage is the help of `switchboard dlq -h`.
const dlqUsage = `Usage: switchboard dlq list|show|replay|purge [arguments] [flags]

Actions:
  dlq list          list dead letters, oldest failure first
  dlq show ID       print one dead letter: every field, metadata and payload
  dlq replay ID     publish a dead letter again to the group that failed it
  dlq replay --all  replay every dead letter matching the filters
  dlq purge         delete the dead letters matching filters, or --all (asks for --yes)

Flags of every action:
  --db URL                PostgreSQL URL (default $SWITCHBOARD_DB)
  --schema NAME           schema of the library's tables (default "switchboard")
  --connect-timeout D     bound on opening the database, and the bridge of replay (default 10s)
Flags of dlq replay:
  --bridge URL            bridge URL (default $SWITCHBOARD_BRIDGE)

Run 'switchboard dlq <action> -h' for the flags of one action.
`

// errorWidth is how many characters of the error `dlq list` shows.
const errorWidth = 60

// runDLQ is `switchboard dlq list|show|replay|purge`.
func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	actions := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"list": dlqList, "show": dlqShow, "replay": dlqReplay, "purge": dlqPurge,
	}
	c := newGroup("dlq", dlqUsage)
	if len(args) == 0 {
		return c.usageErr("dlq: want one of list, show, replay, purge")
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		return helpRequested{c.help()}
	}
	f, ok := actions[args[0]]
	if !ok {
		return c.usageErr("dlq: unknown action %q (want list, show, replay or purge)", args[0])
	}
	return f(ctx, args[1:], stdout, stderr)
}

// filterFlags are the record filters of list, replay --all and purge.
type filterFlags struct {
	service, handler, topic, errorText, since, until string
}

func (ff *filterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&ff.service, "service", "", "only records of the service `name`d (e.g. email.v1)")
	fs.StringVar(&ff.handler, "handler", "", "only records of the handler `name`d")
	fs.StringVar(&ff.topic, "topic", "", "only records of the `topic`")
	fs.StringVar(&ff.errorText, "error", "", "only records whose error contains this `text` (case-insensitive)")
	fs.StringVar(&ff.since, "since", "", "only records last failed at or after this `time` (RFC 3339, or a duration ago: 24h, 7d)")
	fs.StringVar(&ff.until, "until", "", "only records last failed before this `time` (RFC 3339, or a duration ago)")
}

func (ff *filterFlags) filter(c *command, now time.Time) (deadletter.Filter, error) {
	f := deadletter.Filter{Service: ff.service, Handler: ff.handler, Topic: ff.topic, ErrorContains: ff.errorText}
	var err error
	if ff.since != "" {
		if f.Since, err = parseTime(ff.since, now); err != nil {
			return f, c.usageErr("--since: %v", err)
		}
	}
	if ff.until != "" {
		if f.Until, err = parseTime(ff.until, now); err != nil {
			return f, c.usageErr("--until: %v", err)
		}
	}
	return f, nil
}

func (ff *filterFlags) empty() bool { return *ff == filterFlags{} }

// scoped reports whether a filter other than time is given: one that
// keeps a purge to some services' dead letters.
func (ff *filterFlags) scoped() bool {
	return ff.service != "" || ff.handler != "" || ff.topic != "" || ff.errorText != ""
}

// openStore connects to the database and returns its dead-letter store.
func openStore(ctx context.Context, c *command, d *dbFlags) (*pgstore.Store, func(), error) {
	db, err := d.open(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	s, err := pgstore.New(db, d.schema)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return s, func() { _ = db.Close() }, nil
}

func dlqList(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c := newCommand("dlq list", "dlq list [filters] [--limit N] [--after CURSOR] [--json] [--db URL] [--schema NAME] [--connect-timeout D]")
	var (
		d      dbFlags
		ff     filterFlags
		limit  int
		after  string
		asJSON bool
	)
	d.register(c.fs)
	ff.register(c.fs)
	c.fs.IntVar(&limit, "limit", 50, "at most `N` records per page")
	c.fs.StringVar(&after, "after", "", "`cursor` of the next page, as printed by the previous one")
	c.fs.BoolVar(&asJSON, "json", false, `print {"records": [...], "next": "cursor"} as JSON`)
	if err := c.parseNoArgs(args); err != nil {
		return err
	}
	if limit < 1 {
		return c.usageErr("--limit: must be at least 1")
	}
	f, err := ff.filter(c, time.Now())
	if err != nil {
		return err
	}
	f.Limit, f.After = limit, after
	if f.After != "" {
		if _, _, err := deadletter.ParseCursor(f.After); err != nil {
			return c.usageErr("--after: %v", err)
		}
	}
	store, done, err := openStore(ctx, c, &d)
	if err != nil {
		return err
	}
	defer done()
	recs, next, err := store.List(ctx, f)
	if err != nil {
		return err
	}

	if asJSON {
		if recs == nil {
			recs = []deadletter.Record{}
		}
		return writeJSON(stdout, struct {
			Records []deadletter.Record `json:"records"`
			Next    string              `json:"next"`
		}{recs, next})
	}
	if len(recs) == 0 {
		_, err := fmt.Fprintln(stdout, "no dead letters match")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tLAST FAILED\tSERVICE\tHANDLER\tATTEMPTS\tKIND\tERROR")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", oneLine(r.ID), r.LastFailedAt.UTC().Format(time.RFC3339),
			oneLine(r.Service), oneLine(r.Handler), r.Attempts, oneLine(r.ErrorKind), truncate(oneLine(r.Error), errorWidth))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(stdout, "\nnext page: --after '%s'\n", next)
	}
	return nil
}

func dlqShow(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c := newCommand("dlq show", "dlq show ID [--json] [--db URL] [--schema NAME] [--connect-timeout D]")
	var (
		d      dbFlags
		asJSON bool
	)
	d.register(c.fs)
	c.fs.BoolVar(&asJSON, "json", false, "print the record as JSON (payload in base64)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return c.usageErr("dlq show: want exactly one record ID")
	}
	store, done, err := openStore(ctx, c, &d)
	if err != nil {
		return err
	}
	defer done()
	r, err := store.Get(ctx, pos[0])
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, r)
	}
	return printRecord(stdout, r)
}

// printRecord writes every field of r for a human.
func printRecord(w io.Writer, r deadletter.Record) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range [][2]string{
		{"ID", r.ID}, {"Message ID", r.MessageID}, {"Topic", r.Topic}, {"Service", r.Service},
		{"Handler", r.Handler}, {"Group", r.Group}, {"Error kind", r.ErrorKind},
		{"Attempts", fmt.Sprint(r.Attempts)},
		{"First failed", r.FirstFailedAt.UTC().Format(time.RFC3339Nano)},
		{"Last failed", r.LastFailedAt.UTC().Format(time.RFC3339Nano)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], oneLine(f[1]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nError:\n%s\n", indent(r.Error))

	fmt.Fprintf(w, "\nMetadata (%d):\n", len(r.Metadata))
	keys := make([]string, 0, len(r.Metadata))
	for k := range r.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, k := range keys {
		fmt.Fprintf(tw, "  %s\t%s\n", oneLine(k), oneLine(r.Metadata[k]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	var pretty bytes.Buffer
	switch {
	case len(r.Payload) == 0:
		fmt.Fprintf(w, "\nPayload: empty\n")
	case json.Valid(r.Payload) && json.Indent(&pretty, r.Payload, "  ", "  ") == nil:
		// JSON strings may hold C1 and format characters raw.
		fmt.Fprintf(w, "\nPayload (%d bytes, JSON):\n  %s\n", len(r.Payload), printable(pretty.String(), true))
	case utf8.Valid(r.Payload):
		fmt.Fprintf(w, "\nPayload (%d bytes, text):\n%s\n", len(r.Payload), indent(string(r.Payload)))
	default:
		fmt.Fprintf(w, "\nPayload (%d bytes, binary):\n%s", len(r.Payload), hex.Dump(r.Payload))
	}
	return nil
}

func dlqReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("dlq replay", "dlq replay (ID | --all [filters]) [--bridge URL] [--db URL] [--schema NAME] [--connect-timeout D]")
	var (
		d         dbFlags
		ff        filterFlags
		all       bool
		bridgeRaw string
	)
	d.register(c.fs)
	ff.register(c.fs)
	c.fs.BoolVar(&all, "all", false, "replay, once each, every record matching the filters that last failed before the command started")
	c.fs.StringVar(&bridgeRaw, "bridge", "", "bridge `URL` to publish through (default $"+envBridge+")")
	bridgeToo(c.fs)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	switch {
	case all && len(pos) > 0:
		return c.usageErr("dlq replay: give a record ID or --all, not both")
	case !all && len(pos) != 1:
		return c.usageErr("dlq replay: want one record ID, or --all")
	case !all && !ff.empty():
		return c.usageErr("dlq replay: filters go with --all")
	}
	f, err := ff.filter(c, time.Now())
	if err != nil {
		return err
	}
	rawURL, err := bridgeURL(c, bridgeRaw)
	if err != nil {
		return err
	}
	store, done, err := openStore(ctx, c, &d)
	if err != nil {
		return err
	}
	defer done()
	b, err := openBridge(ctx, rawURL, d.connectTimeout)
	if err != nil {
		return err
	}
	defer b.Close()
	if !b.Capabilities().CrossProcess {
		return fmt.Errorf("the %s bridge is in-process: a message replayed through it reaches nobody outside this command", b.Name())
	}

	if !all {
		if err := deadletter.Replay(ctx, store, b.Publisher(), pos[0]); err != nil {
			return err
		}
		_, err := fmt.Fprintln(stdout, "replayed 1 message")
		return err
	}
	n, err := deadletter.ReplayAll(ctx, store, b.Publisher(), f)
	counts := fmt.Sprintf("replayed %d %s, %d failed (kept), %d gone (removed by someone else first)",
		n.Replayed, plural(n.Replayed, "message"), n.Failed, n.Gone)
	if err != nil {
		fmt.Fprintln(stderr, counts)
		return err
	}
	_, err = fmt.Fprintln(stdout, counts)
	return err
}

func dlqPurge(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c := newCommand("dlq purge", `dlq purge (filters | --all) [--older-than DURATION] [--yes] [--db URL] [--schema NAME] [--connect-timeout D]

Deletes the dead letters matching the filters (those of dlq list) that
last failed before the command started. At least one of --service,
--handler, --topic or --error is required; --all instead deletes every
service's dead letters (still within --older-than, --since, --until).
Without --yes it only counts them.`)
	var (
		d         dbFlags
		ff        filterFlags
		olderThan string
		all, yes  bool
	)
	d.register(c.fs)
	ff.register(c.fs)
	c.fs.StringVar(&olderThan, "older-than", "", "only records last failed more than this `duration` ago (e.g. 72h, 30d); --until with a duration")
	c.fs.BoolVar(&all, "all", false, "purge without a service, handler, topic or error filter: every service's dead letters")
	c.fs.BoolVar(&yes, "yes", false, "really delete; without it, only count what would be deleted")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return c.usageErr("dlq purge: unexpected argument %q", pos[0])
	case all && ff.scoped():
		return c.usageErr("dlq purge: give --all or a --service, --handler, --topic or --error filter, not both")
	case !all && !ff.scoped():
		return c.usageErr("dlq purge: give a --service, --handler, --topic or --error filter, or --all to purge every service's dead letters")
	case olderThan != "" && ff.until != "":
		return c.usageErr("dlq purge: give --older-than or --until, not both")
	}
	if olderThan != "" {
		if _, err := parseDurationDays(olderThan); err != nil {
			return c.usageErr("--older-than: %v", err)
		}
		ff.until = olderThan
	}
	now := time.Now()
	f, err := ff.filter(c, now)
	if err != nil {
		return err
	}
	if f.Until.IsZero() || f.Until.After(now) {
		f.Until = now // what failed until now: the count and the purge agree, and paging ends
	}
	store, done, err := openStore(ctx, c, &d)
	if err != nil {
		return err
	}
	defer done()
	when := f.Until.UTC().Format(time.RFC3339)

	if yes {
		n, err := store.Purge(ctx, f)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "purged %d dead %s last failed before %s\n", n, plural(n, "letter"), when)
		return err
	}
	n := 0
	f.Limit = 1000
	for {
		page, next, err := store.List(ctx, f)
		if err != nil {
			return err
		}
		n += len(page)
		if next == "" {
			break
		}
		f.After = next // keyset paging: strictly forward, ends at f.Until
	}
	_, err = fmt.Fprintf(stdout, "would purge %d dead %s last failed before %s; nothing deleted: add --yes to delete\n",
		n, plural(n, "letter"), when)
	return err
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// oneLine keeps a wire-controlled value on one table line, printable.
func oneLine(s string) string {
	return printable(strings.Join(strings.Fields(s), " "), false)
}

// truncate shortens s to at most n characters, marking the cut with "…".
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// indent prefixes every line of s with two spaces; s is wire-controlled.
func indent(s string) string {
	return "  " + strings.ReplaceAll(printable(strings.TrimRight(s, "\n"), true), "\n", "\n  ")
}

// printable makes wire-controlled text safe to print on a terminal, where
// an escape sequence in a message id or payload could retitle the window,
// clear the screen or rewrite what the operator reads. Control characters
// (C0 — but \n and \t when multiline —, DEL, C1), format characters (bidi
// overrides, zero-width), line separators and other non-graphic runes are
// written as Go escapes (\x1b, \u009b, \u202e), and bytes that are not
// UTF-8 as \xff. Backslashes are left as they are: the text is for reading,
// and --json gives the exact value.
func printable(s string, multiline bool) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsGraphic(r), multiline && (r == '\n' || r == '\t'):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r) // not graphic, so never printed raw
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// writeJSON writes v as indented JSON. encoding/json escapes the C0
// controls in strings but writes C1 and format characters (U+009B, a
// terminal's CSI; U+202E) raw; they can only stand in strings, where a
// \u escape means the same, so they are escaped too.
func writeJSON(w io.Writer, v any) error {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeSafeJSON(w, out)
}

// writeSafeJSON writes the JSON text out (from encoding/json) and a
// newline, with the runes writeJSON escapes escaped.
func writeSafeJSON(w io.Writer, out []byte) error {
	var b strings.Builder
	for _, r := range string(out) { // valid UTF-8: Marshal replaces invalid bytes
		switch {
		case unicode.IsGraphic(r), r == '\n':
			b.WriteRune(r)
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}
