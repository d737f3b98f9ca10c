//! The messaging scenarios, each a shape of the fan-out engine (`fanout/`).

use super::fanout::{self, FanoutPlan};
use crate::Report;
use clap::Args;

/// Options every messaging scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Room URL template (`{room}` is replaced); repeat for several gateways: connections
    /// take them in turn
    #[arg(
        long = "url",
        default_value = "ws://127.0.0.1:1999/parties/main/{room}"
    )]
    pub urls: Vec<String>,
    /// Messages per second per publisher; a comma-separated list runs steps of rising rate
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub rate: Vec<f64>,
    /// Seconds measured per rate step, after the warm-up
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Source addresses 127.0.0.1..=N to spread connections over (past ~28k connections)
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// Handshakes in flight at once while connecting
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// PIDs of the server's processes (comma-separated), to read their CPU time and RSS
    /// from /proc
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Prefix of the room names
    #[arg(long, default_value = "load")]
    pub room_prefix: String,
}

impl Common {
    fn plan(&self, scenario: &'static str, rooms: usize, members: usize) -> FanoutPlan {
        FanoutPlan {
            scenario,
            urls: self.urls.clone(),
            room_prefix: self.room_prefix.clone(),
            rooms,
            members,
            all_publish: false,
            rates: self.rate.clone(),
            secs: self.secs,
            warmup_secs: self.warmup_secs,
            payload_bytes: self.payload_bytes.max(64),
            sources: self.sources,
            concurrency: self.concurrency,
            server_pid: self.server_pid.clone(),
            churn_per_sec: 0.0,
            slow_consumers: 0,
            failover: None,
        }
    }
}

#[derive(Args, Debug)]
pub struct HotRoomOpts {
    #[command(flatten)]
    pub common: Common,
    /// Receiving members (the publisher is one more connection)
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
}

#[derive(Args, Debug)]
pub struct ManyRoomsOpts {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1000)]
    pub rooms: usize,
    /// Receiving members per room (each room has one more connection publishing)
    #[arg(long, default_value_t = 10)]
    pub members: usize,
}

#[derive(Args, Debug)]
pub struct AllToAllOpts {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Members per room; every one of them publishes at the rate
    #[arg(long, default_value_t = 50)]
    pub members: usize,
}

#[derive(Args, Debug)]
pub struct ChurnOpts {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Share of the members that reconnect each second
    #[arg(long, default_value_t = 0.05)]
    pub reconnect_share: f64,
}

#[derive(Args, Debug)]
pub struct SlowConsumerOpts {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Members that stop reading
    #[arg(long, default_value_t = 1)]
    pub slow: usize,
}

#[derive(Args, Debug)]
pub struct FailoverOpts {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Shell command that kills or drains the room's owner (say, `kill -9 PID`)
    #[arg(long)]
    pub command: String,
    /// Seconds into the measured window at which the command runs
    #[arg(long, default_value_t = 5)]
    pub at_secs: u64,
}

pub async fn hot_room(o: HotRoomOpts) -> anyhow::Result<Report> {
    fanout::run(o.common.plan("hot-room", 1, o.members)).await
}

pub async fn many_rooms(o: ManyRoomsOpts) -> anyhow::Result<Report> {
    fanout::run(o.common.plan("many-rooms", o.rooms, o.members)).await
}

pub async fn all_to_all(o: AllToAllOpts) -> anyhow::Result<Report> {
    let mut plan = o.common.plan("all-to-all", o.rooms, o.members);
    plan.all_publish = true;
    fanout::run(plan).await
}

pub async fn churn(o: ChurnOpts) -> anyhow::Result<Report> {
    let mut plan = o.common.plan("churn", o.rooms, o.members);
    plan.churn_per_sec = o.reconnect_share;
    fanout::run(plan).await
}

pub async fn slow_consumer(o: SlowConsumerOpts) -> anyhow::Result<Report> {
    let mut plan = o.common.plan("slow-consumer", 1, o.members);
    plan.slow_consumers = o.slow;
    fanout::run(plan).await
}

pub async fn failover(o: FailoverOpts) -> anyhow::Result<Report> {
    let mut plan = o.common.plan("failover", o.rooms, o.members);
    plan.failover = Some((o.command, o.at_secs));
    fanout::run(plan).await
}
