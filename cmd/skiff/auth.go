package main

import (
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Say who the server takes you for, and what you may do",
	}
	cmd.AddCommand(newWhoAmICmd(g), newCanICmd(g))
	return cmd
}

func newWhoAmICmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Print the principal the server authenticates you as",
		Long: `Whoami prints who the server takes the caller for: a token with its role,
namespace and expiry, a node's agent, or a server.`,
		Example: `  skiff auth whoami
  SKIFF_TOKEN=$TOKEN skiff auth whoami`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ac, err := authClient(g)
			if err != nil {
				return err
			}
			res, err := ac.WhoAmI(cmd.Context(), connect.NewRequest(&skiffv1.WhoAmIRequest{}))
			if err != nil {
				return plain(err)
			}
			m := res.Msg
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "NAME:       %s\nKIND:       %s\n", m.GetName(), m.GetKind())
			switch m.GetKind() {
			case "token":
				fmt.Fprintf(w, "ROLE:       %s\nNAMESPACE:  %s\nEXPIRES:    %s\n", m.GetRole(), orDefault(m.GetNamespace(), "* (cluster-wide)"), expires(m.GetExpires()))
			case "node":
				fmt.Fprintf(w, "NODE:       %s\n", m.GetNode())
			}
			return nil
		},
	}
}

// errNo is can-i's answer no: exit 1, the reason on stderr.
var errNo = errors.New("no")

func newCanICmd(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "can-i VERB KIND [NAME]",
		Short: "Say whether you may make a call: prints yes (exit 0) or no (exit 1)",
		Long: `Can-i asks the server whether the caller may do VERB to KIND, as kubectl auth
can-i does. It prints yes and exits 0, or prints no, says why on stderr and
exits 1.

VERB is get, list, watch, create, update, delete, updatestatus, bind or logs;
members or snapshot with KIND cluster. KIND is one of ` + strings.Join(kindHelp(), ", ") + `,
tokens or cluster. A namespaced kind is checked in -n (default "default"),
or in every namespace with -A. skiff top pods needs list pods.`,
		Example: `  skiff auth can-i create pods -n team
  skiff auth can-i delete node node-1
  skiff auth can-i list pods -A
  skiff auth can-i snapshot cluster`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &skiffv1.CanIRequest{Verb: args[0], Kind: args[1]}
			if len(args) == 3 {
				req.Name = args[2]
			}
			switch strings.ToLower(args[1]) {
			case "tokens", "token":
				req.Namespace = g.namespace
			case "cluster":
			default:
				k, err := kinds.Lookup(args[1])
				if err != nil {
					return fmt.Errorf("%w, tokens or cluster", err)
				}
				req.Namespace = namespaceFor(k, g.namespace, all)
			}
			ac, err := authClient(g)
			if err != nil {
				return err
			}
			res, err := ac.CanI(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return plain(err)
			}
			if res.Msg.GetAllowed() {
				fmt.Fprintln(cmd.OutOrStdout(), "yes")
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), "no")
			if r := res.Msg.GetReason(); r != "" {
				return fmt.Errorf("%w: %s", errNo, r)
			}
			return errNo
		},
	}
	f := cmd.Flags()
	f.StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	f.BoolVarP(&all, "all-namespaces", "A", false, "ask about every namespace")
	return cmd
}
