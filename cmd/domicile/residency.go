package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/residency"
)

const residencyUsage = `Usage: domicile residency <command> [flags] [arguments]

Commands:
  check    validate a policy; list every problem with its field and line
             domicile residency check policy.yaml
  explain  which home region a new user would get, by which rule, and why
             domicile residency explain --policy p.yaml --email x@acme.de --ip 203.0.113.9 --geoip country.mmdb
  diff     which rules would send new users to a different region
             domicile residency diff old.yaml new.yaml
  report   where each kind of data is kept, per region (not implemented yet)

Run 'domicile residency <command> --help' for the flags of a command.
`

// runResidency implements `domicile residency`. A policy with problems, or
// one that cannot be read, is an error (exit 1); bad arguments are usage
// errors (exit 2).
func runResidency(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, residencyUsage)
		return usageError{errors.New("a command is required: check, explain or diff")}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "check":
		return residencyCheck(rest, stdout, stderr)
	case "explain":
		return residencyExplain(rest, stdout, stderr)
	case "diff":
		return residencyDiff(rest, stdout, stderr)
	case "report":
		return runResidencyReport(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, residencyUsage)
		return flag.ErrHelp
	default:
		fmt.Fprint(stderr, residencyUsage)
		return usageError{fmt.Errorf("unknown command %q: want check, explain or diff", cmd)}
	}
}

func residencyCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("residency check", "Validates the residency policy file given as the only argument:\n\n  domicile residency check policy.yaml\n\n"+
		"Prints a summary and exits 0 if the policy is valid. Otherwise prints every\nproblem, one per line with the field and line it is on, and exits 1.", stderr)
	if err := parseArgs(fs, args, "policy.yaml"); err != nil {
		return err
	}
	path := fs.Arg(0)
	p, err := loadPolicy(path, stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: %s\n", p.Summary())
	return nil
}

func residencyExplain(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("residency explain", "Shows which home region the policy gives a new user with the given facts,\n"+
		"the rule that decides and why. The client's country comes from --ip looked\n"+
		"up in --geoip (a MaxMind country database, or the free one `make geoip`\n"+
		"installs as data/geoip/geo-whois-asn-country.mmdb), or from --country.", stderr)
	policy := fs.String("policy", "", "path of the residency policy (YAML) (required)")
	email := fs.String("email", "", "the user's email address (only its domain is used)")
	ipFlag := fs.String("ip", "", "the client's IP address, looked up in --geoip")
	geoip := fs.String("geoip", "", "path of a country geo-IP database (MMDB) for --ip")
	country := fs.String("country", "", "the client's ISO 3166-1 alpha-2 country, instead of --ip")
	tenant := fs.String("tenant", "", "the tenant id the user signs up under")
	prefer := fs.String("prefer", "", "the region the user asked for")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *policy == "":
		return usageError{errors.New("--policy: required")}
	case *ipFlag != "" && *country != "":
		return usageError{errors.New("give either --ip (with --geoip) or --country, not both")}
	case *ipFlag != "" && *geoip == "":
		return usageError{errors.New("--ip needs --geoip FILE.mmdb (`make geoip` installs a free one), or give --country instead")}
	case *geoip != "" && *ipFlag == "":
		return usageError{errors.New("--geoip needs --ip")}
	case *country != "" && !isCountryCode(*country):
		return usageError{fmt.Errorf("--country: %q is not a two-letter ISO 3166-1 code", *country)}
	}
	var ip netip.Addr
	if *ipFlag != "" {
		var err error
		if ip, err = netip.ParseAddr(*ipFlag); err != nil {
			return usageError{fmt.Errorf("--ip: %q is not an IP address", *ipFlag)}
		}
	}

	p, err := loadPolicy(*policy, stdout)
	if err != nil {
		return err
	}
	facts := residency.Facts{Email: *email, Country: strings.ToUpper(*country), Tenant: *tenant, Preference: *prefer}
	countrySource := "(none given)"
	if *country != "" {
		countrySource = facts.Country + " (--country)"
	}
	if ip.IsValid() {
		g, err := residency.OpenGeoIP(*geoip)
		if err != nil {
			return err
		}
		facts.Country = g.Country(ip)
		if facts.Country != "" {
			countrySource = fmt.Sprintf("%s (geo-IP: %s in %q database %s)", facts.Country, ip, g.DatabaseType(), *geoip)
		} else {
			countrySource = fmt.Sprintf("unknown (geo-IP: %s is not in %q database %s)", ip, g.DatabaseType(), *geoip)
		}
		if err := g.Close(); err != nil {
			return err
		}
	}

	d := p.Evaluate(facts)
	line := func(label, value string) { fmt.Fprintf(stdout, "%-12s %s\n", label, value) }
	line("region", fmt.Sprintf("%s (jurisdiction %s)", d.Region, p.Jurisdiction(d.Region)))
	line("rule", d.Rule)
	line("explanation", d.Explanation)
	line("policy", fmt.Sprintf("version %d (%s)", p.Version(), *policy))
	// The facts, without the email's local part.
	emailFact := "(none given)"
	if *email != "" {
		emailFact = "(no domain)"
		if at := strings.LastIndexByte(*email, '@'); at >= 0 && at < len(*email)-1 {
			emailFact = "domain " + (*email)[at+1:]
		}
	}
	line("email", emailFact)
	line("country", countrySource)
	line("tenant", orNone(*tenant))
	line("preference", orNone(*prefer))
	return nil
}

func residencyDiff(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("residency diff", "Shows which rules would send NEW users to a different region if the policy\n"+
		"in the first file were replaced by the one in the second:\n\n  domicile residency diff old.yaml new.yaml\n\n"+
		"Existing users keep their home region whatever the policy says. With --router,\n"+
		"it also says how many index entries each changed rule created (users who\n"+
		"keep their home; only new sign-ups follow the new rule).", stderr)
	router := fs.String("router", "", "base URL of a router, to count the index entries each changed rule created")
	secrets := fs.String("secrets", "./data/secrets.json", "secrets file holding the internal API token (with --router)")
	if err := parseArgs(fs, args, "old.yaml", "new.yaml"); err != nil {
		return err
	}
	var ps [2]*residency.Policy
	var errs []error
	for i := range ps {
		var err error
		if ps[i], err = loadPolicy(fs.Arg(i), stdout); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	d := ps[0].Diff(ps[1])
	fmt.Fprint(stdout, d.String())
	if *router == "" || len(d.Changes) == 0 {
		return nil
	}
	counts, err := ruleCounts(*router, *secrets)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nindex entries created by each changed rule so far (they keep their region):\n")
	var total uint64
	for _, c := range d.Changes {
		fmt.Fprintf(stdout, "  %-28s %d\n", c.Rule, counts[c.Rule])
		total += counts[c.Rule]
	}
	fmt.Fprintf(stdout, "  %-28s %d\n", "total", total)
	return nil
}

func ruleCounts(router, secretsFile string) (map[string]uint64, error) {
	sec, err := launch.LoadSecrets(secretsFile)
	if err != nil {
		return nil, usageError{fmt.Errorf("--secrets: %w", err)}
	}
	c, err := homeindex.NewClient([]string{router}, sec.InternalToken, nil)
	if err != nil {
		return nil, usageError{fmt.Errorf("--router: %w", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("index status from %s: %w", router, err)
	}
	return st.RuleCounts, nil
}

// parseArgs parses flags and requires exactly the named positional
// arguments.
func parseArgs(fs *flag.FlagSet, args []string, names ...string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() != len(names) {
		return usageError{fmt.Errorf("want %d argument(s), %s; got %d", len(names), strings.Join(names, " "), fs.NArg())}
	}
	return nil
}

// loadPolicy loads the policy at path. If it is invalid, it prints every
// problem to w, one per line prefixed with path, and returns an error
// saying how many there are.
func loadPolicy(path string, w io.Writer) (*residency.Policy, error) {
	p, err := residency.Load(path)
	var ve *residency.ValidationError
	if errors.As(err, &ve) {
		for _, pr := range ve.Problems {
			fmt.Fprintf(w, "%s: %s\n", path, pr)
		}
		if n := len(ve.Problems); n != 1 {
			return nil, fmt.Errorf("%s: invalid policy: %d problems", path, n)
		}
		return nil, fmt.Errorf("%s: invalid policy: 1 problem", path)
	}
	return p, err
}

func isCountryCode(s string) bool {
	return len(s) == 2 && isLetter(s[0]) && isLetter(s[1])
}

func isLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

func orNone(s string) string {
	if s == "" {
		return "(none given)"
	}
	return s
}
