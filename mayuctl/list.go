package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"mayu/pkg/host"
)

// defaultListFields are the columns of a plain `mayuctl list`, as the seed
// shows them.
const defaultListFields = "ip,serial,profile,ipmiaddr,providerid,etcdtoken,metadata,coreos,state,lastboot"

// lastBootFormat is the lastboot column's layout.
const lastBootFormat = "2006-01-02 15:04:05"

// listFieldNames are the valid --fields values, in the order help shows them.
func listFieldNames() []string {
	return []string{"ip", "serial", "profile", "ipmiaddr", "providerid", "etcdtoken", "metadata",
		"coreos", "state", "lastboot", "machineid", "hostname", "cabinet", "mayu", "yochu", "docker",
		"etcd", "fleet", "rkt", "k8s", "instance"}
}

// listCell returns the function printing one column, and false for an
// unknown field. Empty ip, profile, ipmiaddr and providerid print "-" (so a
// machine that has none still shows a visible cell where the seed has one);
// other empty cells stay empty.
func listCell(field string) (func(h host.Host) string, bool) {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	switch field {
	case "ip":
		return func(h host.Host) string {
			if h.InternalAddr == nil {
				return "-"
			}
			return h.InternalAddr.String()
		}, true
	case "serial":
		return func(h host.Host) string { return h.Serial }, true
	case "profile":
		return func(h host.Host) string { return dash(h.Profile) }, true
	case "ipmiaddr":
		return func(h host.Host) string {
			if h.IPMIAddr == nil {
				return "-"
			}
			return h.IPMIAddr.String()
		}, true
	case "providerid":
		return func(h host.Host) string { return dash(h.ProviderId) }, true
	case "etcdtoken":
		return func(h host.Host) string { return h.EtcdClusterToken }, true
	case "metadata":
		return func(h host.Host) string { return h.FleetMetadata.String() }, true
	case "coreos":
		return func(h host.Host) string { return h.CoreOSVersion }, true
	case "state":
		return func(h host.Host) string { return quotedState(h.State) }, true
	case "lastboot":
		return func(h host.Host) string { return h.LastBoot.Format(lastBootFormat) }, true
	case "machineid":
		return func(h host.Host) string { return h.MachineID }, true
	case "hostname":
		return func(h host.Host) string { return h.Hostname }, true
	case "cabinet":
		return func(h host.Host) string { return strconv.FormatUint(uint64(h.Cabinet), 10) }, true
	case "mayu":
		return func(h host.Host) string { return h.MayuVersion }, true
	case "yochu":
		return func(h host.Host) string { return h.YochuVersion }, true
	case "docker":
		return func(h host.Host) string { return h.DockerVersion }, true
	case "etcd":
		return func(h host.Host) string { return h.EtcdVersion }, true
	case "fleet":
		return func(h host.Host) string { return h.FleetVersion }, true
	case "rkt":
		return func(h host.Host) string { return h.RktVersion }, true
	case "k8s":
		return func(h host.Host) string { return h.K8sVersion }, true
	case "instance":
		// The mayu instance that last wrote the record (an etcd store
		// shared by several); "-" for a record of one mayu.
		return func(h host.Host) string { return dash(h.Instance) }, true
	}
	return nil, false
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list the machines mayu knows",
		UsageText: "mayuctl list [--no-legend] [--fields=FIELD,...]",
		Description: `One line per machine, sorted as text (so by IP address first), under a
header of the upper-cased field names.

Valid fields: ` + strings.Join(listFieldNames(), ",") + `

Examples:
   mayuctl --no-tls list
   mayuctl list --no-legend --fields=serial,state
   watch ./mayuctl --no-tls list`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-legend", Usage: "do not print the header line"},
			&cli.StringFlag{Name: "fields", Value: defaultListFields,
				Usage: "comma-separated columns to print"},
		},
		Action: func(cCtx *cli.Context) error {
			if err := wantArgs(cCtx, 0, ""); err != nil {
				return err
			}
			fields, cells, err := parseFields(cCtx.String("fields"))
			if err != nil {
				return err
			}
			c, err := newClient(cCtx)
			if err != nil {
				return err
			}
			hosts, err := c.List(requestContext(cCtx))
			if err != nil {
				return failure("list", err)
			}
			return writeList(cCtx.App.Writer, hosts, fields, cells, !cCtx.Bool("no-legend"))
		},
	}
}

// parseFields checks --fields and returns the field names and their cell
// functions.
func parseFields(s string) ([]string, []func(host.Host) string, error) {
	var fields []string
	var cells []func(host.Host) string
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		cell, ok := listCell(f)
		if !ok {
			return nil, nil, usagef("list: unknown field %q (valid fields: %s)", f, strings.Join(listFieldNames(), ","))
		}
		fields = append(fields, f)
		cells = append(cells, cell)
	}
	if len(fields) == 0 {
		return nil, nil, usagef("list: --fields is empty (valid fields: %s)", strings.Join(listFieldNames(), ","))
	}
	return fields, cells, nil
}

// writeList prints the table the way Mayu's mayuctl did (columnize with two
// spaces of glue), minus its trailing blanks when the last cell is empty.
// Every cell goes through printable: one line per host, whatever it
// reported.
func writeList(w io.Writer, hosts []host.Host, fields []string, cells []func(host.Host) string, legend bool) error {
	rows := make([][]string, 0, len(hosts)+1)
	for _, h := range hosts {
		row := make([]string, len(cells))
		for i, cell := range cells {
			row[i] = printable(strings.TrimSpace(cell(h)))
		}
		rows = append(rows, row)
	}
	// Mayu sorted the "|"-joined lines before aligning them; sorting on the
	// same key keeps the same order.
	sort.SliceStable(rows, func(i, j int) bool {
		return strings.Join(rows[i], "|") < strings.Join(rows[j], "|")
	})
	if legend {
		header := make([]string, len(fields))
		for i, f := range fields {
			header[i] = strings.ToUpper(f)
		}
		rows = append([][]string{header}, rows...)
	}
	_, err := io.WriteString(w, alignColumns(rows))
	return err
}

// alignColumns pads every column but the last to its widest cell and glues
// columns with two spaces. Each line ends in a newline and no blank.
func alignColumns(rows [][]string) string {
	var widths []int
	for _, row := range rows {
		for i, cell := range row {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			if n := utf8.RuneCountInString(cell); n > widths[i] {
				widths[i] = n
			}
		}
	}
	var b strings.Builder
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			if i == len(row)-1 {
				line.WriteString(cell)
				break
			}
			line.WriteString(cell)
			line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell)+2))
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
	return b.String()
}

// quotedState prints a state as Mayu's mayuctl did: with its quotes. A
// record without a state is unknown.
func quotedState(s host.State) string {
	if s == "" {
		s = host.Unknown
	}
	return s.Quoted()
}

// statusKeyWidth is the width of the longest status key,
// "Machine on Cabinet:", plus the two spaces that follow every key.
const statusKeyWidth = len("Machine on Cabinet:") + 2

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show everything mayu knows about one machine",
		UsageText: "mayuctl status <serial>",
		Description: `For a machine that is not progressing, two more lines follow: "Last step:"
(dhcp, tftp, boot-script, pxe-image, first-stage, final-config, install,
installed, running) and "Explanation:", the likely cause in one line.

Examples:
   mayuctl --no-tls status 0800278e158a-0`,
		Action: func(cCtx *cli.Context) error {
			if err := wantArgs(cCtx, 1, "<serial>"); err != nil {
				return err
			}
			c, err := newClient(cCtx)
			if err != nil {
				return err
			}
			serial := cCtx.Args().First()
			h, err := c.Get(requestContext(cCtx), serial)
			if err != nil {
				return failure("status "+serial, err)
			}
			if err := writeStatus(cCtx.App.Writer, h); err != nil {
				return err
			}
			// A mayu without explanations (Mayu 0.11) answers 404: the
			// status is complete without one.
			x, err := c.Explain(requestContext(cCtx), serial)
			if err != nil {
				return nil
			}
			return writeExplanation(cCtx.App.Writer, x)
		},
	}
}

// writeStatus prints one "Key:  value" line per field, in Mayu's order,
// every value through printable.
func writeStatus(w io.Writer, h host.Host) error {
	lines := []struct{ key, value string }{
		{"Serial", h.Serial},
		{"IP", h.InternalAddr.String()}, // a nil IP prints "<nil>", as Mayu's did
		{"IPMI", h.IPMIAddr.String()},
		{"Provider ID", h.ProviderId},
		{"Macs", strings.Join(h.MacAddresses, ", ")},
		{"Cabinet", strconv.FormatUint(uint64(h.Cabinet), 10)},
		{"Machine on Cabinet", strconv.FormatUint(uint64(h.MachineOnCabinet), 10)},
		{"Hostname", h.Hostname},
		{"MachineID", h.MachineID},
		{"ConnectedNIC", h.ConnectedNIC},
		{"Profile", h.Profile},
		{"DisableEngine", strconv.FormatBool(h.FleetDisableEngine)},
		{"State", quotedState(h.State)},
		{"EtcdToken", h.EtcdClusterToken},
		{"Metadata", strings.Join(h.FleetMetadata, ", ")},
		{"CoreOS", h.CoreOSVersion},
		{"Mayu", h.MayuVersion},
		{"Yochu", h.YochuVersion},
		{"Docker", h.DockerVersion},
		{"Etcd", h.EtcdVersion},
		{"Fleet", h.FleetVersion},
		{"Rkt", h.RktVersion},
		{"K8s", h.K8sVersion},
		{"LastBoot", h.LastBoot.String()},
		{"Enabled", strconv.FormatBool(h.Enabled)},
	}
	if h.Instance != "" {
		// Only records of an etcd store shared by several instances have
		// one, so the status of a record of one mayu stays 0.11's.
		lines = append(lines, struct{ key, value string }{"Instance", h.Instance})
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%-*s%s\n", statusKeyWidth, l.key+":", printable(l.value))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
