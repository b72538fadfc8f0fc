package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"mayu/pkg/provision"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
)

// migrateCommand is `mayu migrate`: it copies every host record and the
// cluster settings from a cluster directory into etcd or back (store.Copy),
// so a single-host installation can grow to several instances.
func migrateCommand(stdout io.Writer, env func(string) []string) *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "copy every host record and the cluster settings from a cluster directory into etcd, or back",
		UsageText: "mayu migrate --from=<cluster directory> --to=etcd --store-endpoints=host:port,... [--store-prefix=/mayu/]\n" +
			"   mayu migrate --from=etcd --store-endpoints=host:port,... --to=<cluster directory>",
		Description: "Stop the mayu instances using the source first. The target must hold no host record and no cluster settings " +
			"unless --overwrite is given; every copied record is read back and compared with its source.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the source: a cluster directory, or etcd (with --store-endpoints)"},
			&cli.StringFlag{Name: "to", Usage: "the target: etcd (with --store-endpoints), or a cluster directory (a git repository; created if missing)"},
			&cli.BoolFlag{Name: "overwrite", Usage: "write into a target that holds records: replace the records of the serials the source has, keep the others"},
		}, storeFlags(env, false)...),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit(fmt.Sprintf("mayu migrate: unexpected arguments %q (flags only; see --help)", c.Args().Slice()), 2)
			}
			from, to := c.String("from"), c.String("to")
			var problems []string
			switch {
			case from == "" || to == "":
				problems = append(problems, "--from and --to are required: one of them etcd, the other a cluster directory")
			case from == storeEtcd && to == storeEtcd:
				problems = append(problems, "--from=etcd and --to=etcd: one of them must be a cluster directory")
			case from != storeEtcd && to != storeEtcd:
				problems = append(problems, "--from and --to are both cluster directories: one of them must be etcd (copy a directory with git clone)")
			}
			so, storeProblems := readStoreOptions(c, storeEtcd)
			problems = append(problems, storeProblems...)
			if from != "" && from != storeEtcd {
				if st, err := os.Stat(from); err != nil {
					problems = append(problems, fmt.Sprintf("--from: %v", err))
				} else if !st.IsDir() {
					problems = append(problems, fmt.Sprintf("--from: %s is not a directory", from))
				}
			}
			if len(problems) > 0 {
				return cli.Exit("mayu migrate: "+problemsError(problems).Error(), 2)
			}
			log := newLogger(c.App.ErrWriter, false)
			if err := migrate(stdout, so, from, to, c.Bool("overwrite"), log); err != nil {
				return cli.Exit("mayu migrate: "+err.Error(), 1)
			}
			return nil
		},
	}
}

// migrate copies from one store into the other and prints what it did.
func migrate(w io.Writer, so storeOptions, from, to string, overwrite bool, log *slog.Logger) error {
	open := func(side string) (store.Store, string, error) {
		if side == storeEtcd {
			st, err := so.openEtcd(log)
			if err != nil {
				return nil, "", err
			}
			return st, so.describe(""), nil
		}
		st, err := gitdir.Open(side, gitdir.Options{Logger: log})
		if err != nil {
			return nil, "", err
		}
		return st, "cluster directory " + side, nil
	}
	src, srcName, err := open(from)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer src.Close()
	dst, dstName, err := open(to)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer dst.Close()
	res, err := store.Copy(dst, src, store.CopyOptions{
		RecordMessage:  "host copied from " + srcName + " by mayu migrate",
		ClusterMessage: func(token string) string { return fmt.Sprintf(provision.ClusterTokenMessage, token) },
		Overwrite:      overwrite,
	})
	if errors.Is(err, store.ErrTargetNotEmpty) {
		return fmt.Errorf("%s: %w (--overwrite)", dstName, err)
	}
	if err != nil {
		return err
	}
	cluster := "unchanged"
	if res.Cluster {
		cluster = "copied"
	}
	fmt.Fprintf(w, "copied %d host records from %s to %s: %d created, %d replaced, %d already identical; cluster settings %s\n",
		res.Created+res.Replaced+res.Unchanged, srcName, dstName, res.Created, res.Replaced, res.Unchanged, cluster)
	fmt.Fprintf(w, "the target holds %d host records; each copied one was read back and matches its source\n", res.Target)
	return nil
}
