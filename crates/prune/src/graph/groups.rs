//! Channel dependency analysis (survey section 6.1, filter and channel
//! structures, applied to a whole [`Graph`]): which output channels of which
//! layers must be removed together so that every remaining layer stays a
//! smaller *dense* layer.
//!
//! Every output channel of a *producer* — a dense (`groups = 1`) convolution
//! or a linear layer — is a unit of removal. Channels are followed through the
//! graph and tied where the graph ties them:
//!
//! - batch norm, element-wise activations, pooling, padding, identity and
//!   dropout pass channel `c` through as channel `c`;
//! - a depthwise convolution (`groups` = its input channels, channel
//!   multiplier `m`) maps input channel `c` to outputs `c·m .. (c+1)·m`;
//! - a residual `Add` ties channel `c` of all its inputs, the
//!   squeeze–excitation `Mul` ties channel `c` of `x` and of the gate;
//! - `Concat` maps each input's channels to its slice of the output;
//! - `Flatten` maps channel `c` to its block of `h·w` features, so a linear
//!   layer reading it loses whole column blocks (as does a linear layer reading
//!   a `C×H×W` value directly).
//!
//! Producers whose channels are tied form one [`ChannelGroup`]; its *units*
//! are the tied channel sets (for a plain residual stage, unit `k` is channel
//! `k` of every producer of the stage). A group is *frozen* — its channels
//! cannot be removed — when a unit reaches a graph input or output, or a node
//! that cannot lose channels: a grouped (not depthwise) convolution, a
//! compressed block, a channel shuffle, a softmax over channels, … The reason
//! names the node.

use std::collections::HashMap;

use hasten_core::graph::{NodeOp, ValueId};
use hasten_core::{Error, Graph, Op, Result};

/// One set of producers whose output channels are removed together, and the
/// nodes that removal touches.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelGroup {
    /// Dense convolutions and linear layers whose output rows (and biases)
    /// are the group's channels, in topological order.
    pub producers: Vec<String>,
    /// Dense convolutions and linear layers that read the channels and lose
    /// input columns (column blocks for a linear layer after a flatten).
    pub consumers: Vec<String>,
    /// Batch norms and depthwise convolutions that lose per-channel entries.
    pub channel_wise: Vec<String>,
    /// Parameter-free nodes the channels pass through (activations, pooling,
    /// `Add`, `Concat`, `Mul`, `Flatten`), whose shapes shrink — and, for a
    /// frozen group, the node that freezes it.
    pub pass_through: Vec<String>,
    /// Number of units (independently removable channel sets).
    pub channels: usize,
    /// Why the group's channels cannot be removed, if they cannot.
    pub frozen: Option<String>,
    /// Per unit, the (producer node index, output channel) pairs it holds.
    pub(crate) units: Vec<Vec<(usize, usize)>>,
    /// The producers' node indices, parallel to `producers`.
    pub(crate) producer_nodes: Vec<usize>,
}

impl ChannelGroup {
    /// The group's name: its first producer's.
    pub fn name(&self) -> &str {
        &self.producers[0]
    }

    /// The (producer name, output channel) pairs of unit `unit`, or an error
    /// for a unit out of range.
    pub fn unit(&self, unit: usize) -> Result<Vec<(&str, usize)>> {
        let members = self
            .units
            .get(unit)
            .ok_or_else(|| Error::param("channel unit", unit, format!("< {}", self.channels)))?;
        Ok(members
            .iter()
            .map(|&(node, ch)| {
                let at = self.producer_slot(node);
                (self.producers[at].as_str(), ch)
            })
            .collect())
    }

    /// Whether node `node` is listed in the group (in any role).
    pub fn touches(&self, node: &str) -> bool {
        [
            &self.producers,
            &self.consumers,
            &self.channel_wise,
            &self.pass_through,
        ]
        .iter()
        .any(|list| list.iter().any(|n| n == node))
    }

    fn producer_slot(&self, node: usize) -> usize {
        self.producer_nodes
            .iter()
            .position(|&p| p == node)
            .expect("a unit member is one of the group's producers")
    }
}

/// Where one channel of a value goes when channels are removed: a unit of a
/// group, or nowhere (`None`: a frozen channel of no group, always kept).
pub(crate) type Slot = Option<(usize, usize)>;

/// The channel dependency analysis of one graph: its [`ChannelGroup`]s and,
/// for every value, which unit each of its channels belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelGroups {
    groups: Vec<ChannelGroup>,
    /// The analysed graph's node names, to refuse another graph.
    pub(crate) node_names: Vec<String>,
    /// The analysed graph's node roles, likewise.
    roles: Vec<Role>,
    /// Per graph input, per channel.
    pub(crate) input_slots: Vec<Vec<Slot>>,
    /// Per node output, per channel.
    pub(crate) node_slots: Vec<Vec<Slot>>,
}

/// How a node takes part in channel removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Dense convolution or linear layer: new channels out, columns in.
    Producer,
    /// Depthwise convolution with channel multiplier `m`.
    Depthwise(usize),
    /// Batch norm: channel `c` in is channel `c` out, with parameters.
    BatchNorm,
    /// Parameter-free: passes, ties, concatenates or flattens channels.
    PassThrough,
    /// Cannot lose channels: freezes its inputs, fresh frozen outputs.
    Barrier,
}

/// The role of a node computing `op`.
pub(crate) fn role(op: &NodeOp) -> Role {
    match op {
        NodeOp::Op(Op::Conv(c)) => {
            let groups = c.spec().groups;
            if groups == 1 {
                Role::Producer
            } else if groups == c.in_channels() {
                Role::Depthwise(c.out_channels() / groups)
            } else {
                Role::Barrier
            }
        }
        NodeOp::Op(Op::Linear(_)) => Role::Producer,
        NodeOp::Op(Op::BatchNorm(_)) => Role::BatchNorm,
        NodeOp::Op(
            Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool(_)
            | Op::Pad(_)
            | Op::Identity(_)
            | Op::Dropout(_)
            | Op::Flatten(_),
        )
        | NodeOp::Add
        | NodeOp::Concat
        | NodeOp::Mul => Role::PassThrough,
        NodeOp::Op(op) if op.as_elementwise().is_some() => Role::PassThrough,
        _ => Role::Barrier,
    }
}

/// Union–find over channel elements, each root carrying the first reason it
/// was frozen for.
#[derive(Default)]
struct Elements {
    parent: Vec<usize>,
    frozen: Vec<Option<String>>,
    /// The producer (node index, channel) an element is, if it is one.
    owner: Vec<Option<(usize, usize)>>,
}

impl Elements {
    fn fresh(&mut self, owner: Option<(usize, usize)>, frozen: Option<String>) -> usize {
        self.parent.push(self.parent.len());
        self.frozen.push(frozen);
        self.owner.push(owner);
        self.parent.len() - 1
    }

    fn find(&mut self, mut e: usize) -> usize {
        while self.parent[e] != e {
            self.parent[e] = self.parent[self.parent[e]];
            e = self.parent[e];
        }
        e
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.parent[hi] = lo;
            if self.frozen[lo].is_none() {
                self.frozen[lo] = self.frozen[hi].take();
            }
        }
    }

    fn freeze(&mut self, e: usize, reason: &str) {
        let r = self.find(e);
        if self.frozen[r].is_none() {
            self.frozen[r] = Some(reason.to_string());
        }
    }
}

impl ChannelGroups {
    /// Analyses `graph`'s channel dependencies (see the [module
    /// documentation](self)).
    ///
    /// # Errors
    /// None at present: every op of a [`Graph`] is analysed (an op the
    /// analysis does not model freezes the groups it touches instead of
    /// failing).
    ///
    /// ```
    /// use hasten_models::{lenet5, ModelConfig};
    /// use hasten_prune::graph::ChannelGroups;
    ///
    /// // LeNet-5: one group per conv / linear layer; the classifier's channels
    /// // are the graph output, so its group is frozen.
    /// let graph = lenet5(&ModelConfig::mnist())?;
    /// let groups = ChannelGroups::analyze(&graph)?;
    /// assert_eq!(groups.len(), 5);
    /// assert_eq!(groups.prunable(), [0, 1, 2, 3]);
    /// let conv2 = &groups.groups()[groups.group_of("conv2")?];
    /// assert_eq!((conv2.channels, conv2.consumers.as_slice()), (16, ["fc1".to_string()].as_slice()));
    /// assert_eq!(conv2.unit(3)?, [("conv2", 3)]);
    /// assert!(groups.groups()[groups.group_of("fc3")?].frozen.is_some());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn analyze(graph: &Graph) -> Result<ChannelGroups> {
        let mut el = Elements::default();
        let mut input_maps = Vec::new();
        for input in graph.inputs() {
            let reason = format!("tied to graph input `{}`", input.name());
            input_maps.push(
                (0..input.shape().channels)
                    .map(|_| el.fresh(None, Some(reason.clone())))
                    .collect::<Vec<_>>(),
            );
        }
        let mut node_maps: Vec<Vec<usize>> = Vec::with_capacity(graph.nodes().len());
        for (j, node) in graph.nodes().iter().enumerate() {
            let ins: Vec<Vec<usize>> = node
                .inputs()
                .iter()
                .map(|&v| match v {
                    ValueId::Input(i) => input_maps[i].clone(),
                    ValueId::Node(i) => node_maps[i].clone(),
                })
                .collect();
            let out_channels = node.output_shape().channels;
            let out = match (role(node.op()), node.op()) {
                (Role::Producer, _) => (0..out_channels)
                    .map(|t| el.fresh(Some((j, t)), None))
                    .collect(),
                (Role::Depthwise(m), _) => (0..out_channels).map(|t| ins[0][t / m]).collect(),
                (Role::BatchNorm, _) => ins[0].clone(),
                (Role::PassThrough, NodeOp::Op(Op::Flatten(_))) => {
                    let area = node.input_shapes()[0].area();
                    (0..out_channels).map(|f| ins[0][f / area]).collect()
                }
                (Role::PassThrough, NodeOp::Concat) => ins.concat(),
                (Role::PassThrough, NodeOp::Add | NodeOp::Mul) => {
                    for other in &ins[1..] {
                        for (&a, &b) in ins[0].iter().zip(other) {
                            el.union(a, b);
                        }
                    }
                    ins[0].clone()
                }
                (Role::PassThrough, _) => ins[0].clone(),
                (Role::Barrier, op) => {
                    let reason = barrier_reason(node.name(), op);
                    for &e in ins.iter().flatten() {
                        el.freeze(e, &reason);
                    }
                    (0..out_channels)
                        .map(|_| el.fresh(None, Some(reason.clone())))
                        .collect()
                }
            };
            node_maps.push(out);
        }
        for &v in graph.outputs() {
            let reason = format!("tied to graph output `{}`", graph.value_name(v));
            let map = match v {
                ValueId::Input(i) => &input_maps[i],
                ValueId::Node(i) => &node_maps[i],
            };
            for &e in map {
                el.freeze(e, &reason);
            }
        }
        Ok(Self::assemble(graph, el, &input_maps, &node_maps))
    }

    /// Groups producers by shared roots, numbers units and records slots.
    fn assemble(
        graph: &Graph,
        mut el: Elements,
        input_maps: &[Vec<usize>],
        node_maps: &[Vec<usize>],
    ) -> ChannelGroups {
        // Producers sharing a root are one group (union–find on producers).
        let producers: Vec<usize> = (0..graph.nodes().len())
            .filter(|&j| role(graph.nodes()[j].op()) == Role::Producer)
            .collect();
        let mut leader: Vec<usize> = (0..producers.len()).collect();
        fn top(leader: &mut [usize], mut p: usize) -> usize {
            while leader[p] != p {
                leader[p] = leader[leader[p]];
                p = leader[p];
            }
            p
        }
        let mut first_of_root: HashMap<usize, usize> = HashMap::new();
        for (p, &j) in producers.iter().enumerate() {
            for &e in &node_maps[j] {
                let r = el.find(e);
                match first_of_root.get(&r) {
                    Some(&q) => {
                        let (a, b) = (top(&mut leader, p), top(&mut leader, q));
                        leader[a.max(b)] = a.min(b);
                    }
                    None => {
                        first_of_root.insert(r, p);
                    }
                }
            }
        }
        let mut group_of_leader: HashMap<usize, usize> = HashMap::new();
        let mut groups: Vec<ChannelGroup> = Vec::new();
        let mut unit_of_root: HashMap<usize, (usize, usize)> = HashMap::new();
        for (p, &j) in producers.iter().enumerate() {
            let lead = top(&mut leader, p);
            let g = *group_of_leader.entry(lead).or_insert_with(|| {
                groups.push(ChannelGroup {
                    producers: Vec::new(),
                    consumers: Vec::new(),
                    channel_wise: Vec::new(),
                    pass_through: Vec::new(),
                    channels: 0,
                    frozen: None,
                    units: Vec::new(),
                    producer_nodes: Vec::new(),
                });
                groups.len() - 1
            });
            let group = &mut groups[g];
            group.producers.push(graph.nodes()[j].name().to_string());
            group.producer_nodes.push(j);
            for (t, &e) in node_maps[j].iter().enumerate() {
                let r = el.find(e);
                let (_, u) = *unit_of_root.entry(r).or_insert_with(|| {
                    group.units.push(Vec::new());
                    (g, group.units.len() - 1)
                });
                group.units[u].push((j, t));
                if group.frozen.is_none() {
                    group.frozen = el.frozen[r].clone();
                }
            }
            group.channels = group.units.len();
        }
        let mut slots_of = |map: &[usize]| -> Vec<Slot> {
            map.iter()
                .map(|&e| unit_of_root.get(&el.find(e)).copied())
                .collect()
        };
        let input_slots: Vec<Vec<Slot>> = input_maps.iter().map(|m| slots_of(m)).collect();
        let node_slots: Vec<Vec<Slot>> = node_maps.iter().map(|m| slots_of(m)).collect();
        // Which nodes each group touches, and how.
        let groups_in = |slots: &[Slot]| -> Vec<usize> {
            let mut gs: Vec<usize> = slots.iter().flatten().map(|&(g, _)| g).collect();
            gs.sort_unstable();
            gs.dedup();
            gs
        };
        for (j, node) in graph.nodes().iter().enumerate() {
            let read: Vec<Slot> = node
                .inputs()
                .iter()
                .flat_map(|&v| match v {
                    ValueId::Input(i) => input_slots[i].iter().copied(),
                    ValueId::Node(i) => node_slots[i].iter().copied(),
                })
                .collect();
            let read = groups_in(&read);
            let name = node.name().to_string();
            match role(node.op()) {
                Role::Producer => {
                    for g in read {
                        groups[g].consumers.push(name.clone());
                    }
                }
                kind => {
                    let mut all = read;
                    all.extend(groups_in(&node_slots[j]));
                    all.sort_unstable();
                    all.dedup();
                    for g in all {
                        let list = match kind {
                            Role::Depthwise(_) | Role::BatchNorm => &mut groups[g].channel_wise,
                            _ => &mut groups[g].pass_through,
                        };
                        list.push(name.clone());
                    }
                }
            }
        }
        ChannelGroups {
            groups,
            node_names: graph.nodes().iter().map(|n| n.name().to_string()).collect(),
            roles: graph.nodes().iter().map(|n| role(n.op())).collect(),
            input_slots,
            node_slots,
        }
    }

    /// The groups, numbered in the topological order of their first producer.
    pub fn groups(&self) -> &[ChannelGroup] {
        &self.groups
    }

    /// The number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether the graph has no producer at all.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The index of the group whose producers include node `node`; an unknown
    /// node or one that produces no channels is an error.
    ///
    /// # Errors
    /// [`hasten_core::GraphError::UnknownNode`] (as [`Error::Graph`]) for a
    /// name the graph lacks, and [`Error::InvalidParameter`] for a node that is
    /// not a dense convolution or linear layer.
    ///
    /// ```
    /// use hasten_models::{lenet5, ModelConfig};
    /// use hasten_prune::graph::ChannelGroups;
    ///
    /// let groups = ChannelGroups::analyze(&lenet5(&ModelConfig::mnist())?)?;
    /// assert_eq!(groups.group_of("fc1")?, 2);
    /// assert!(groups.group_of("no such node").is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn group_of(&self, node: &str) -> Result<usize> {
        if !self.node_names.iter().any(|n| n == node) {
            return Err(hasten_core::GraphError::UnknownNode {
                name: node.to_string(),
            }
            .into());
        }
        self.groups
            .iter()
            .position(|g| g.producers.iter().any(|p| p == node))
            .ok_or_else(|| {
                Error::param(
                    "pruned node",
                    node,
                    "a dense convolution or linear layer (a channel producer)",
                )
            })
    }

    /// Freezes every prunable group for which `keep_prunable` is false,
    /// recording `reason`; returns how many groups stay prunable. Restricts
    /// pruning to the groups a caller selects (by the producers they tie,
    /// say) without touching the analysis of the others.
    ///
    /// ```
    /// use hasten_models::{lenet5, ModelConfig};
    /// use hasten_prune::graph::ChannelGroups;
    ///
    /// // Prune only the convolutions' channels.
    /// let mut groups = ChannelGroups::analyze(&lenet5(&ModelConfig::mnist())?)?;
    /// let left = groups.freeze_unless(|g| g.name().starts_with("conv"), "not selected");
    /// assert_eq!((left, groups.prunable()), (2, vec![0, 1]));
    /// assert_eq!(groups.groups()[2].frozen.as_deref(), Some("not selected"));
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn freeze_unless(
        &mut self,
        mut keep_prunable: impl FnMut(&ChannelGroup) -> bool,
        reason: &str,
    ) -> usize {
        for group in &mut self.groups {
            if group.frozen.is_none() && !keep_prunable(group) {
                group.frozen = Some(reason.to_string());
            }
        }
        self.prunable().len()
    }

    /// The indices of the groups whose channels may be removed.
    pub fn prunable(&self) -> Vec<usize> {
        (0..self.groups.len())
            .filter(|&g| self.groups[g].frozen.is_none() && self.groups[g].channels > 1)
            .collect()
    }

    /// Checks that `graph` is the graph these groups were computed from.
    pub(crate) fn check_graph(&self, graph: &Graph) -> Result<()> {
        // Same names, roles and channel counts: every index the removal
        // selects is then in range.
        let same = graph.nodes().len() == self.node_names.len()
            && graph.inputs().len() == self.input_slots.len()
            && graph
                .inputs()
                .iter()
                .zip(&self.input_slots)
                .all(|(i, slots)| i.shape().channels == slots.len())
            && graph.nodes().iter().enumerate().all(|(j, n)| {
                n.name() == self.node_names[j]
                    && role(n.op()) == self.roles[j]
                    && n.output_shape().channels == self.node_slots[j].len()
            });
        if !same {
            return Err(Error::param(
                "graph",
                "a graph other than the analysed one",
                "the graph ChannelGroups::analyze was given",
            ));
        }
        Ok(())
    }

    /// The slots of value `v`'s channels.
    pub(crate) fn slots(&self, v: ValueId) -> &[Slot] {
        match v {
            ValueId::Input(i) => &self.input_slots[i],
            ValueId::Node(i) => &self.node_slots[i],
        }
    }
}

fn barrier_reason(node: &str, op: &NodeOp) -> String {
    match op {
        NodeOp::Op(Op::Conv(c)) => format!(
            "read by grouped convolution `{node}` ({} groups; only whole groups could go, which is not supported)",
            c.spec().groups
        ),
        _ => format!("read by `{node}` ({}), which cannot lose channels", op.kind()),
    }
}
