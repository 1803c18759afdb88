package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the bearer tokens that authenticate API calls",
		Long: `A token holds a role in one namespace, or in every namespace and over the
cluster-scoped kinds when it has none. The roles are those of Kubernetes:
view (read, and pods' logs), edit (view, and create, update and delete pods
and events; namespaces and nodes too when cluster-wide) and admin (edit, and
tokens of its scope; a cluster-wide admin may do anything a token can).

Only an admin manages tokens, and only in its scope: a namespaced admin
creates, lists and revokes the tokens of its namespace.`,
	}
	cmd.AddCommand(newTokenCreateCmd(g), newTokenListCmd(g), newTokenRevokeCmd(g))
	return cmd
}

func authClient(g *globals) (skiffv1connect.AuthServiceClient, error) {
	c, err := g.clients()
	if err != nil {
		return nil, err
	}
	return skiffv1connect.NewAuthServiceClient(c.hc, c.base), nil
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var (
		ns, role, description string
		ttl                   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --role admin|edit|view [--namespace NS] [--ttl 24h] [--description TEXT]",
		Short: "Create a token and print it, once",
		Long: `Create makes a token and prints it on a line of its own: the server keeps
only a hash of it, so it cannot be shown again. Without --namespace the
token is cluster-wide, which only a cluster-wide admin may create; without
--ttl it never expires.`,
		Example: `  skiff token create --role view --namespace team --ttl 24h --description "dashboard"
  TOKEN=$(skiff token create --role edit -n team)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl: invalid value %s: must not be negative (0: never expires)", ttl)
			}
			if ttl%time.Second != 0 {
				return fmt.Errorf("--ttl: invalid value %s: whole seconds only", ttl)
			}
			ac, err := authClient(g)
			if err != nil {
				return err
			}
			res, err := ac.CreateToken(cmd.Context(), connect.NewRequest(&skiffv1.CreateTokenRequest{
				Namespace: ns, Role: role, TtlSeconds: int64(ttl / time.Second), Description: description,
			}))
			if err != nil {
				return plain(err)
			}
			info := res.Msg.GetInfo()
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s: %s %s, expires %s; it is not shown again\n",
				info.GetId(), info.GetRole(), tokenScope(info.GetNamespace()), expires(info.GetExpires()))
			fmt.Fprintln(cmd.OutOrStdout(), res.Msg.GetToken())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&ns, "namespace", "n", "", "the namespace the token's role holds in (default: cluster-wide)")
	f.StringVar(&role, "role", "", "the token's role: admin, edit or view")
	f.DurationVar(&ttl, "ttl", 0, "how long the token is valid, e.g. 24h (default: it never expires)")
	f.StringVar(&description, "description", "", "what the token is for")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"admin", "edit", "view"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newTokenListCmd(g *globals) *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:   "list [-n NS]",
		Short: "List tokens (never their secrets)",
		Long: `List prints the tokens the caller administers: every token for a
cluster-wide admin, the tokens of its namespace for a namespaced one; -n
keeps those of one namespace.`,
		Example: `  skiff token list
  skiff token list -n team`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ac, err := authClient(g)
			if err != nil {
				return err
			}
			res, err := ac.ListTokens(cmd.Context(), connect.NewRequest(&skiffv1.ListTokensRequest{Namespace: ns}))
			if err != nil {
				return plain(err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAMESPACE\tROLE\tEXPIRES\tDESCRIPTION")
			for _, t := range res.Msg.GetTokens() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.GetId(), orDefault(t.GetNamespace(), "*"), t.GetRole(), expires(t.GetExpires()), t.GetDescription())
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "", "only the tokens of this namespace")
	return cmd
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token: calls with it are refused from then on",
		Example: `  skiff token list
  skiff token revoke 5pvergiofhtc`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ac, err := authClient(g)
			if err != nil {
				return err
			}
			res, err := ac.RevokeToken(cmd.Context(), connect.NewRequest(&skiffv1.RevokeTokenRequest{Id: args[0]}))
			if err != nil {
				return plain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", res.Msg.GetId())
			return nil
		},
	}
}

// tokenScope words where a token's role holds.
func tokenScope(ns string) string {
	if ns == "" {
		return "cluster-wide"
	}
	return "in namespace " + ns
}

// expires prints a token's expiry: RFC 3339, or never.
func expires(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "never"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}
