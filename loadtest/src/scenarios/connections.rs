//! What connect-storm and idle-hold share: the server, how many connections over how
//! many rooms and source addresses, and opening this process's share of them.

use crate::client::{open_many, Opened, Targets};
use crate::{progress_bar, shard};
use clap::Args;

#[derive(Args, Debug)]
pub struct ConnectionOpts {
    /// Room URL template (`{room}` is replaced); repeat for several gateways
    #[arg(
        long = "url",
        default_value = "ws://127.0.0.1:1999/parties/main/{room}"
    )]
    pub urls: Vec<String>,
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections are spread over this many rooms
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Source addresses 127.0.0.1..=N to spread connections over
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
}

impl ConnectionOpts {
    /// Opens this process's share of the connections (all of them when it runs alone),
    /// `concurrency` handshakes at a time, spread over rooms named `{name}-{r}`. Returns
    /// the share's size too.
    pub async fn open_share(
        &self,
        name: &str,
        concurrency: usize,
    ) -> anyhow::Result<(Opened, usize)> {
        let targets = Targets::resolve(&self.urls, self.sources).await?;
        let rooms = self.rooms.max(1);
        let (i, n) = shard::shard();
        let count = shard::share(self.connections, i, n);
        let bar = progress_bar(count as u64, "connecting");
        let opened = open_many(
            &targets,
            count,
            concurrency,
            &format!("{name}{i}"),
            |local| format!("{name}-{}", shard::global(local) % rooms),
            &bar,
        )
        .await?;
        bar.finish_and_clear();
        Ok((opened, count))
    }
}

#[cfg(test)]
mod tests {
    use crate::{LoadtestOpts, Scenario};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: LoadtestOpts,
    }

    /// The benchmark scripts pass these flags, shared or not, with these defaults.
    #[test]
    fn connection_scenarios_take_their_flags() {
        <Cli as clap::CommandFactory>::command().debug_assert();
        let cli = Cli::parse_from(
            "loadtest idle-hold --url ws://h:1/{room} --connections 9 --rooms 3 --sources 2 \
             --concurrency 4 --hold-secs 5 --server-pid 7,8"
                .split_whitespace(),
        );
        let Scenario::IdleHold(o) = cli.opts.scenario else {
            panic!("not idle-hold");
        };
        let c = &o.connections;
        assert_eq!(
            (c.urls.as_slice(), c.connections, c.rooms),
            (&["ws://h:1/{room}".to_string()][..], 9, 3)
        );
        assert_eq!((c.sources, o.concurrency, o.hold_secs), (2, 4, 5));
        assert_eq!(o.server_pid, [7, 8]);
        let cli = Cli::parse_from(["loadtest", "connect-storm"]);
        let Scenario::ConnectStorm(o) = cli.opts.scenario else {
            panic!("not connect-storm");
        };
        assert_eq!(
            (o.connections.connections, o.connections.rooms),
            (10_000, 100)
        );
        assert_eq!((o.connections.sources, o.concurrency), (8, 500));
    }
}
