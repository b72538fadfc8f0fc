package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"mayu/pkg/client"
	"mayu/pkg/host"
)

// setKeyNames are the keys `mayuctl set` knows, in the order help lists them.
func setKeyNames() []string {
	return []string{"metadata", "providerid", "ipmiaddr", "cabinet", "state", "etcdtoken", "macs"}
}

func setCommand() *cli.Command {
	return &cli.Command{
		Name:      "set",
		Usage:     "change one field of a machine's record (" + strings.Join(setKeyNames(), ", ") + ")",
		UsageText: "mayuctl set <serial> <key> <value>",
		Description: `Keys:
   metadata     fleet metadata, a comma-separated list of key=value tags
   providerid   the provider's identifier of the machine
   ipmiaddr     IP address of the machine's BMC; "" clears it
   cabinet      cabinet number (0 or more)
   state        unknown, configured, installing, installed or running;
                "configured" makes the machine reinstall at its next PXE boot
   etcdtoken    etcd discovery token the machine joins with
   macs         the machine's MAC addresses, a comma-separated list: re-binds
                the serial after its network cards or board were replaced
                (mayu refuses a report of other MACs for a known serial);
                "" unbinds it, so the next report binds what it reports

Examples:
   mayuctl --no-tls set 0800278e158a-0 state configured
   mayuctl set 0800278e158a-0 metadata role-core=true,rack=7
   mayuctl set 0800278e158a-0 ipmiaddr 10.0.0.17
   mayuctl set 0800278e158a-0 cabinet 4
   mayuctl set 0800278e158a-0 macs 0c:c4:7a:01:02:03,0c:c4:7a:01:02:04`,
		Action: func(cCtx *cli.Context) error {
			if err := wantArgs(cCtx, 3, "<serial> <key> <value>"); err != nil {
				return err
			}
			serial, key, value := cCtx.Args().Get(0), strings.ToLower(cCtx.Args().Get(1)), cCtx.Args().Get(2)
			apply, err := setter(key, value)
			if err != nil {
				return err
			}
			c, err := newClient(cCtx)
			if err != nil {
				return err
			}
			if err := apply(requestContext(cCtx), c, serial); err != nil {
				return failure(fmt.Sprintf("set %s %s", serial, key), err)
			}
			return nil
		},
	}
}

type setFunc func(ctx context.Context, c *client.Client, serial string) error

// setter checks the key and the value before anything is sent, so a typo
// never reaches mayu.
func setter(key, value string) (setFunc, error) {
	switch key {
	case "metadata":
		var tags []string
		for _, t := range strings.Split(value, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
		return func(ctx context.Context, c *client.Client, serial string) error {
			return c.SetMetadata(ctx, serial, tags)
		}, nil
	case "providerid":
		return func(ctx context.Context, c *client.Client, serial string) error {
			return c.SetProviderID(ctx, serial, value)
		}, nil
	case "ipmiaddr":
		if strings.TrimSpace(value) == "" {
			return func(ctx context.Context, c *client.Client, serial string) error {
				return c.ClearIPMIAddr(ctx, serial)
			}, nil
		}
		ip := net.ParseIP(strings.TrimSpace(value))
		if ip == nil {
			return nil, usagef("set: invalid IPMI address %q (want an IP address such as 10.0.0.17)", value)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		return func(ctx context.Context, c *client.Client, serial string) error {
			return c.SetIPMIAddr(ctx, serial, ip)
		}, nil
	case "cabinet":
		n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 32)
		if err != nil {
			return nil, usagef("set: invalid cabinet %q (want a number, 0 or more)", value)
		}
		return func(ctx context.Context, c *client.Client, serial string) error {
			return c.SetCabinet(ctx, serial, uint(n))
		}, nil
	case "state":
		st, err := host.ParseState(value)
		if err != nil {
			return nil, usagef("set: invalid state %q (want one of %s)", value, stateNames())
		}
		return func(ctx context.Context, c *client.Client, serial string) error {
			return c.SetState(ctx, serial, st)
		}, nil
	case "etcdtoken":
		return func(ctx context.Context, c *client.Client, serial string) error {
			return c.SetEtcdClusterToken(ctx, serial, value)
		}, nil
	case "macs":
		var macs []net.HardwareAddr
		for _, m := range strings.Split(value, ",") {
			if m = strings.TrimSpace(m); m == "" {
				continue
			}
			hw, err := net.ParseMAC(m)
			if err != nil || len(hw) != 6 {
				return nil, usagef("set: invalid MAC address %q (want a list such as 0c:c4:7a:01:02:03,0c:c4:7a:01:02:04)", m)
			}
			macs = append(macs, hw)
		}
		return func(ctx context.Context, c *client.Client, serial string) error {
			return c.SetMACs(ctx, serial, macs)
		}, nil
	}
	return nil, usagef("set: unknown key %q (want one of %s)", key, strings.Join(setKeyNames(), ", "))
}

func stateNames() string {
	names := make([]string, len(host.States))
	for i, s := range host.States {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

func overrideCommand() *cli.Command {
	return &cli.Command{
		Name:      "override",
		Usage:     "override a templates_env property (or CoreOSVersion) for one machine",
		UsageText: "mayuctl override <serial> <property> <value>",
		Description: `The property is merged into the machine's overrides: the final
templates see it in .TemplatesEnv instead of the value from config.yaml, and
CoreOSVersion selects the images the machine installs.

Examples:
   mayuctl override 0800278e158a-0 CoreOSVersion 1122.2.0
   mayuctl override 0800278e158a-0 yochu_version 0.19.2`,
		Action: func(cCtx *cli.Context) error {
			if err := wantArgs(cCtx, 3, "<serial> <property> <value>"); err != nil {
				return err
			}
			serial, prop, value := cCtx.Args().Get(0), cCtx.Args().Get(1), cCtx.Args().Get(2)
			if strings.TrimSpace(prop) == "" {
				return usagef("override: empty property name")
			}
			c, err := newClient(cCtx)
			if err != nil {
				return err
			}
			if err := c.Override(requestContext(cCtx), serial, map[string]any{prop: value}); err != nil {
				return failure(fmt.Sprintf("override %s %s", serial, prop), err)
			}
			return nil
		},
	}
}

func markFreshCommand() *cli.Command {
	return &cli.Command{
		Name:      "mark-fresh",
		Usage:     "make a machine reinstall from scratch, disks wiped, at its next PXE boot",
		UsageText: "mayuctl mark-fresh <serial>",
		Description: `Sets the machine's state to configured and turns KeepDiskData off
(set <serial> state configured keeps the data disks).

Examples:
   mayuctl mark-fresh 0800278e158a-0`,
		Action: func(cCtx *cli.Context) error {
			if err := wantArgs(cCtx, 1, "<serial>"); err != nil {
				return err
			}
			c, err := newClient(cCtx)
			if err != nil {
				return err
			}
			serial := cCtx.Args().First()
			if err := c.MarkFresh(requestContext(cCtx), serial); err != nil {
				return failure("mark-fresh "+serial, err)
			}
			return nil
		},
	}
}
