// cluster.test.mjs with the nodes serving the TypeScript twins of the built-in parties
// (tests/compat/partykit-project, bundled once with `conclave build`, loaded by every node
// with --bundle): the same expectations, including the counter that survives every node
// being killed and restarted.
process.env.COMPAT_CLUSTER_PARTIES = "project";
await import("./cluster.test.mjs");
