//! Dependency-aware structured pruning of a whole [`hasten_core::Graph`]
//! (survey section 6.1, filter and channel structures; section 6.2,
//! criteria): channels tied by batch norms, residual `Add`s, `Concat`
//! offsets, depthwise convolutions, squeeze–excitation `Mul`s and
//! `Flatten → Linear` column blocks are found ([`ChannelGroups`]), scored
//! ([`group_scores`]), and physically removed together ([`remove_channels`]),
//! leaving a valid graph of smaller dense layers; [`prune_graph`] does all of
//! it to a target.
//!
//! ```
//! use hasten_core::graph::GraphBuilder;
//! use hasten_core::{ActShape, ConvLayer, ConvSpec, Relu, SeededRng};
//! use hasten_prune::criteria::Norm;
//! use hasten_prune::graph::{
//!     group_scores, prune_graph, ChannelGroups, GraphPruneConfig, GraphTarget, GroupCriterion,
//! };
//!
//! let mut rng = SeededRng::new(0);
//! let conv = |rng: &mut SeededRng, t, c| {
//!     ConvLayer::from_array(rng.normal_array((t, c, 3, 3), 0.1), ConvSpec::new().with_padding(1))
//! };
//! let mut b = GraphBuilder::new();
//! let x = b.input("input", ActShape::new(3, 8, 8));
//! let a = b.op("conv1", conv(&mut rng, 16, 3)?, x);
//! let a = b.op("relu1", Relu, a);
//! let r = b.op("conv2", conv(&mut rng, 16, 16)?, a);
//! let s = b.add("add", &[a, r]);
//! let y = b.op("head", conv(&mut rng, 4, 16)?, s);
//! b.output(y);
//! let graph = b.build()?;
//!
//! let groups = ChannelGroups::analyze(&graph)?;
//! // conv1 and conv2 meet at the residual add: one group of 16 channels.
//! assert_eq!(groups.groups()[0].producers, ["conv1", "conv2"]);
//! let scores = group_scores(&graph, &groups, GroupCriterion::Magnitude(Norm::L1), None)?;
//! let config = GraphPruneConfig { target: GraphTarget::PerGroup(0.5), multiple: 4 };
//! let (pruned, report) = prune_graph(&graph, &groups, &scores, &config)?;
//! assert_eq!(report.groups[0].kept.len(), 8);
//! assert_eq!(pruned.node("conv2").unwrap().output_shape().channels, 8);
//! # Ok::<(), hasten_core::Error>(())
//! ```

pub mod driver;
pub mod groups;
pub mod remove;
pub mod score;

pub use driver::{prune_graph, GraphPruneConfig, GraphPruneReport, GraphTarget, GroupReport};
pub use groups::{ChannelGroup, ChannelGroups};
pub use remove::{
    consumer_input_means, remove_channels, remove_channels_by_name, remove_channels_compensated,
};
pub use score::{group_scores, group_scores_with, GroupCriterion};

#[cfg(test)]
mod tests;
