//! The command line: `serve` runs the appliance; everything else is a REST
//! client of a running one.
//!
//! Keeping the client on the public API (rather than opening the database)
//! means the CLI works from any host, exercises the same code paths as
//! `ochami`, and can never bypass the appliance's validation.

/// Standard output of every command. When the reader goes away early
/// (`openchami … | head`), the process ends quietly with status 141, as a
/// coreutils tool killed by SIGPIPE does, instead of `print!` panicking.
pub(crate) fn write_stdout(bytes: &[u8]) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(bytes).and_then(|()| o.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("openchami: cannot write to standard output: {e}");
            std::process::exit(1);
        }
        std::process::exit(141);
    }
}

// `print!`/`println!` in this module and below go through [`write_stdout`]
// (these definitions shadow std's for the modules declared after them).
macro_rules! print {
    ($($t:tt)*) => {
        $crate::cli::write_stdout(format!($($t)*).as_bytes())
    };
}
macro_rules! println {
    () => {
        $crate::cli::write_stdout(b"\n")
    };
    ($($t:tt)*) => {
        $crate::cli::write_stdout(format!("{}\n", format_args!($($t)*)).as_bytes())
    };
}

mod boot;
mod client;
mod commands;
mod console;
mod dhcp;
mod discover;
mod dns;
mod firmware;
mod hw;
mod lab;
mod metadata;
mod output;
mod power;
mod powercap;
mod progress;
mod serve;
mod sim;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

pub use client::Client;
pub use output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "openchami",
    version,
    about = "A single-binary HPC cluster manager",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every client command shares.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Appliance API base URL [default: from the config file, else https://localhost:8443]
    #[arg(long, global = true, env = "OPENCHAMI_URL")]
    pub url: Option<String>,
    /// CA certificate to trust [default: <state-dir>/ca/root.crt when readable]
    #[arg(long, global = true, env = "OPENCHAMI_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Bearer token [default: $OPENCHAMI_ACCESS_TOKEN, $<CLUSTER>_ACCESS_TOKEN, or minted from the state dir on the head node]
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Configuration file [default: /etc/openchami/config.toml when present]
    #[arg(long, global = true, env = "OPENCHAMI_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory (database, CA, keys) [default: /var/lib/openchami]
    #[arg(long, global = true, env = "OPENCHAMI_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Output format
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the appliance
    Serve(ServeArgs),
    /// Bearer tokens
    #[command(subcommand)]
    Token(TokenCmd),
    /// The appliance certificate authority
    #[command(subcommand)]
    Ca(CaCmd),
    /// The inventory store: status; copy a SQLite state into PostgreSQL (appliance stopped)
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Nodes in the inventory
    #[command(subcommand)]
    Node(NodeCmd),
    /// Groups of components
    #[command(subcommand)]
    Group(GroupCmd),
    /// Boot parameters and boot scripts
    #[command(subcommand)]
    Boot(boot::BootCmd),
    /// cloud-init metadata: defaults, groups, instance info, WireGuard peers, profiles, previews
    #[command(subcommand)]
    Metadata(metadata::MetadataCmd),
    /// DHCP leases
    #[command(subcommand)]
    Dhcp(dhcp::DhcpCmd),
    /// What the DNS server answers: lookups and the whole zone
    #[command(subcommand)]
    Dns(dns::DnsCmd),
    /// BMC firmware: `firmware list [xname]`, `firmware update --image F --targets X|GROUP`
    #[command(subcommand)]
    Firmware(firmware::FirmwareCmd),
    /// Hardware inventory: FRUs at and under an xname, and their history
    #[command(subcommand)]
    Hw(hw::HwCmd),
    /// Serial consoles: `console list`, `console <xname>` (interactive, Ctrl-] leaves),
    /// `console <xname> --tail [--follow] [--lines N]`
    Console(console::ConsoleArgs),
    /// Load a cluster description (ochami static-discovery format)
    Import(ImportArgs),
    /// A lab of virtual nodes on this machine, booted by the appliance (root)
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Find BMCs and crawl them into the inventory (Redfish)
    #[command(subcommand)]
    Discover(discover::DiscoverCmd),
    /// Power nodes on, off, reset or cycle through their BMCs; power status
    #[command(subcommand)]
    Power(power::PowerCmd),
    /// Run simulated Redfish BMCs (for scale tests and benchmarks)
    SimBmc(sim::SimArgs),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages or shell completions into a directory (for packagers)
    #[command(subcommand, hide = true)]
    Generate(GenerateCmd),
}

#[derive(Subcommand, Debug)]
pub enum GenerateCmd {
    /// openchami.1 and one page per subcommand (openchami-node-list.1, ...)
    Man { dir: PathBuf },
    /// openchami.bash, _openchami (zsh) and openchami.fish
    Completions { dir: PathBuf },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Validate the configuration and exit
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Mint a token with the appliance's signing key (needs the state dir)
    Issue {
        /// Lifetime, e.g. 3600, 90m, 12h, 7d [default: auth.token_ttl_secs]
        #[arg(long)]
        ttl: Option<String>,
        /// Subject
        #[arg(long, default_value = "admin")]
        sub: String,
        /// Roles (viewer, operator, admin); none means full access
        #[arg(long = "role")]
        roles: Vec<String>,
        /// OAuth scopes (e.g. read, write) the token carries
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A one-time bootstrap token, only good for exchange at POST /oauth/token
        #[arg(long)]
        bootstrap: bool,
    },
    /// Replace the token signing key (needs the state dir); tokens signed by the old key stay valid
    /// until they expire. With SQLite the appliance must be stopped; on a shared PostgreSQL store
    /// every running head takes the new key. Prints the new key id
    Rotate,
    /// Exchange a one-time bootstrap token at the appliance's POST /oauth/token; prints the JSON reply
    /// (access_token, refresh_token, expires_in, ...)
    Exchange {
        /// The bootstrap token; `-` reads it from standard input
        #[arg(long, env = "TOKENSMITH_BOOTSTRAP_TOKEN", hide_env_values = true)]
        bootstrap: String,
    },
    /// Trade a refresh token for a new access token and refresh token (the one given is then used up);
    /// prints the JSON reply
    Refresh {
        /// The refresh token; `-` reads it from standard input
        #[arg(
            long = "refresh-token",
            env = "OPENCHAMI_REFRESH_TOKEN",
            hide_env_values = true
        )]
        refresh_token: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Print the root certificate's SHA-256 fingerprint
    Fingerprint {
        /// Read the root from this PEM file instead of the state dir
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print the root certificate (PEM)
    Show,
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List nodes
    List {
        /// Only members of this group
        #[arg(long)]
        group: Option<String>,
    },
    /// Show one node with its interfaces and groups
    Show { xname: String },
    /// Add a node
    Add(NodeAddArgs),
    /// Delete nodes
    Delete {
        #[arg(required = true, value_delimiter = ',')]
        xnames: Vec<String>,
    },
    /// Change fields of a node
    Set(NodeSetArgs),
}

#[derive(Args, Debug)]
pub struct NodeAddArgs {
    pub xname: String,
    #[arg(long)]
    pub nid: Option<i64>,
    /// Boot MAC address (repeat for more interfaces)
    #[arg(long = "mac")]
    pub macs: Vec<String>,
    /// IP address for the first MAC
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long)]
    pub subrole: Option<String>,
    /// Add to these groups (created if missing)
    #[arg(long = "group")]
    pub groups: Vec<String>,
    #[arg(long, default_value = "Ready")]
    pub state: String,
    /// Take MACs and addresses that belong to other nodes
    #[arg(long)]
    pub move_macs: bool,
}

#[derive(Args, Debug)]
pub struct NodeSetArgs {
    pub xname: String,
    #[arg(long)]
    pub nid: Option<i64>,
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long)]
    pub subrole: Option<String>,
    #[arg(long)]
    pub enabled: Option<bool>,
    #[arg(long)]
    pub state: Option<String>,
    /// Allow any state change
    #[arg(long)]
    pub force: bool,
    /// The node's MACs, boot MAC first (repeat; interfaces not named are removed)
    #[arg(long = "mac")]
    pub macs: Vec<String>,
    /// The boot interface's IP address (replaces its addresses)
    #[arg(long)]
    pub ip: Option<String>,
    /// Take MACs and addresses that belong to other nodes
    #[arg(long)]
    pub move_macs: bool,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// List groups
    List,
    /// Show one group
    Show { label: String },
    /// Create a group
    Add {
        label: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Initial members
        #[arg(long = "member", value_delimiter = ',')]
        members: Vec<String>,
        #[arg(long)]
        exclusive: Option<String>,
    },
    /// Delete a group
    Delete { label: String },
    /// Add members
    AddMember {
        label: String,
        #[arg(required = true, value_delimiter = ',')]
        xnames: Vec<String>,
    },
    /// Remove members
    RemoveMember {
        label: String,
        #[arg(required = true, value_delimiter = ',')]
        xnames: Vec<String>,
    },
    /// Replace the member set
    SetMembers {
        label: String,
        #[arg(value_delimiter = ',')]
        xnames: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The cluster file (YAML or JSON); - for standard input
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Move MACs and addresses the file gives to other nodes than now hold them
    #[arg(long)]
    pub move_macs: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // One crypto provider for every TLS user in the process (API listener,
    // CLI client); ring keeps the static build free of C toolchains' quirks.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(&cli.global, &args),
        Command::SimBmc(args) => sim::run(&args),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "openchami", &mut buf);
            write_stdout(&buf);
            ExitCode::SUCCESS
        }
        Command::Generate(what) => match generate(&what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("openchami: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
        Command::Lab(cmd) => match lab::run(&cli.global, cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("openchami: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
        command => match commands::run(&cli.global, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.is::<progress::Partial>() => {
                // A result was printed, but not everything worked.
                if let Some(p) = e.downcast_ref::<progress::Partial>() {
                    print!("{}", p.output);
                    eprintln!("openchami: {}", p.message);
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("openchami: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// Errors are one line: the message and its causes, joined.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Writes the man pages or the completion scripts into `dir` (created if
/// missing). Hidden subcommands, like this one, get no page.
pub fn generate(what: &GenerateCmd) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = match what {
        GenerateCmd::Man { dir } | GenerateCmd::Completions { dir } => dir,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match what {
        GenerateCmd::Man { .. } => clap_mangen::generate_to(command(), dir)
            .with_context(|| format!("cannot write man pages to {}", dir.display()))?,
        GenerateCmd::Completions { .. } => {
            use clap_complete::Shell;
            let mut cmd = command();
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cmd, "openchami", dir).with_context(
                    || format!("cannot write {shell} completions to {}", dir.display()),
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn generates_man_pages_and_completions() {
        let tmp = tempfile::tempdir().unwrap();
        let man = tmp.path().join("man");
        generate(&GenerateCmd::Man { dir: man.clone() }).unwrap();
        let page = std::fs::read_to_string(man.join("openchami.1")).unwrap();
        assert!(page.starts_with(".ie"), "{page}");
        assert!(page.contains("serve"));
        assert!(man.join("openchami-serve.1").exists());
        assert!(man.join("openchami-node-list.1").exists());
        // Packaging tooling stays out of the user's manual.
        assert!(!man.join("openchami-generate.1").exists());
        assert!(!page.contains("generate"));

        let comp = tmp.path().join("completions");
        generate(&GenerateCmd::Completions { dir: comp.clone() }).unwrap();
        for f in ["openchami.bash", "_openchami", "openchami.fish"] {
            let text = std::fs::read_to_string(comp.join(f)).unwrap();
            assert!(text.contains("openchami"), "{f}");
            assert!(text.contains("import"), "{f}");
        }
    }
}
