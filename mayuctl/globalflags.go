package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Mayu 0.11's mayuctl took its global options (persistent flags) anywhere on
// the line, and its final templates run
//
//	mayuctl boot-complete --host=<h> --port=<p> --no-tls --update-versions
//
// urfave/cli v2 parses the app's options only before the command name, and
// a command's options only before its first argument (Go's flag package
// stops there). hoistFlags reorders the line once, for every command, so
// urfave sees what it understands:
//
//	mayuctl [global options before] [global options after] command [command options] [arguments]
//
// Only flags the app or the command defines are moved, with their separate
// value where they take one; anything else keeps its place, so an unknown
// flag is still reported and "-1" stays the argument of `set <serial>
// cabinet -1`. Everything after "--" is an argument, even where "--" follows
// other arguments. A command's --help drops its arguments, so `mayuctl set
// <serial> state --help` shows set's help. A global option given twice takes
// its last value (Go's flag package keeps the last one), so one written after
// the command beats one written before it; either beats its $MAYU_ variable.

// flagSpec is what hoistFlags needs to know of a flag name: whether a
// separate argument is its value ("--host 10.0.0.1").
type flagSpec map[string]bool

func (s flagSpec) add(flags []cli.Flag) {
	for _, f := range flags {
		takesValue := true
		if dg, ok := f.(cli.DocGenerationFlag); ok {
			takesValue = dg.TakesValue()
		}
		for _, n := range f.Names() {
			s[n] = takesValue
		}
	}
}

// lookup reports whether arg (not "--") is one of these flags, and whether
// the argument after it is its value. "-dv" is -d -v when both are one-letter
// switches (the app parses it so with UseShortOptionHandling).
func (s flagSpec) lookup(arg string) (known, separateValue bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return false, false
	}
	name := arg[1:]
	single := name[0] != '-'
	if !single {
		name = name[1:]
	}
	if name == "" || name[0] == '-' || name[0] == '=' {
		return false, false // "--", "---x", "-=x": not flag syntax
	}
	name, _, inline := strings.Cut(name, "=")
	if takesValue, ok := s[name]; ok {
		return true, takesValue && !inline
	}
	if !single || inline {
		return false, false
	}
	for _, r := range name {
		if takesValue, ok := s[string(r)]; !ok || takesValue {
			return false, false
		}
	}
	return true, false
}

// hoistFlags returns args (args[0] being the program name) with every global
// option that follows the command name moved in front of it, and the
// command's own options moved in front of its arguments. A line it cannot
// read (an unknown flag before the command, no command) is returned as it
// is, for urfave to report.
//
// A value-taking option at the very end, its value missing, is an error:
// moved in front of the command it would take the command name as value.
func hoistFlags(app *cli.App, args []string) ([]string, error) {
	global := flagSpec{}
	global.add(app.Flags)
	if !app.HideHelp && cli.HelpFlag != nil {
		global.add([]cli.Flag{cli.HelpFlag})
	}

	// The command is the first argument that is neither a global option
	// nor the value of one.
	cmdAt := -1
	for i := 1; i < len(args); i++ {
		known, separateValue := global.lookup(args[i])
		if !known {
			if !strings.HasPrefix(args[i], "-") {
				cmdAt = i
			}
			break
		}
		if separateValue {
			i++
		}
	}
	if cmdAt < 0 {
		return args, nil
	}

	local := flagSpec{}
	help := flagSpec{}
	for _, c := range app.Commands {
		if c.HasName(args[cmdAt]) {
			local.add(c.Flags)
			if !c.HideHelp && cli.HelpFlag != nil {
				help.add([]cli.Flag{cli.HelpFlag})
				local.add([]cli.Flag{cli.HelpFlag})
			}
		}
	}

	out := append([]string{}, args[:cmdAt]...)
	var cmdFlags, rest, afterDashes []string
	wantsHelp, dashes := false, false
	for i := cmdAt + 1; i < len(args); i++ {
		if args[i] == "--" {
			dashes, afterDashes = true, args[i+1:]
			break
		}
		// A command's own option wins a name clash (TestNoFlagNameClash
		// keeps there being none).
		isLocal, separateValue := local.lookup(args[i])
		isGlobal := false
		if !isLocal {
			isGlobal, separateValue = global.lookup(args[i])
		}
		if !isLocal && !isGlobal {
			rest = append(rest, args[i])
			continue
		}
		n := 1
		if separateValue {
			if i+1 == len(args) {
				where := "mayuctl"
				if isLocal {
					where += " " + args[cmdAt]
				}
				// urfave's wording, for the same mistake before the command.
				return nil, usagef("flag needs an argument: -%s (see '%s --help')", strings.TrimLeft(args[i], "-"), where)
			}
			n = 2
		}
		if isLocal {
			cmdFlags = append(cmdFlags, args[i:i+n]...)
			h, _ := help.lookup(args[i])
			wantsHelp = wantsHelp || h
		} else {
			out = append(out, args[i:i+n]...)
		}
		i += n - 1
	}
	out = append(out, args[cmdAt])
	out = append(out, cmdFlags...)
	if wantsHelp {
		// urfave reads arguments after a command's --help as the name of a
		// subcommand to explain; `set <serial> state --help` means set's.
		return out, nil
	}
	if dashes {
		// Right after the options, where Go's flag package takes "--" as
		// their end, so what follows is all arguments.
		out = append(out, "--")
	}
	out = append(out, rest...)
	return append(out, afterDashes...), nil
}

// globalOptionsHelp is the note every command's help ends with, so
// `mayuctl <command> --help` names the options it also takes.
func globalOptionsHelp(flags []cli.Flag) string {
	var names []string
	for _, f := range flags {
		var forms []string
		for _, n := range f.Names() {
			if len(n) == 1 {
				forms = append(forms, "-"+n)
			} else {
				forms = append(forms, "--"+n)
			}
		}
		names = append(names, strings.Join(forms, "/"))
	}
	return "\nGLOBAL OPTIONS (before or after the command, see 'mayuctl --help'):\n   " +
		strings.Join(names, ", ") + "\n"
}
