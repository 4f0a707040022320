//! Where an order's events go under each layout of the order stream: one
//! subject for every order (today), a subject per order, or a bounded number
//! of partitions that orders are hashed into. The stream's own filter
//! (`orders.>`, from [`Names::stream_subjects`]) covers all three.

use serde::Serialize;
use shared_events::Names;
use uuid::Uuid;

/// A way of laying out the order stream's subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Every `OrderPlaced` on `orders.placed`, as today.
    OneSubject,
    /// `orders.<order_id>.placed`: a subject per order.
    PerOrder,
    /// `orders.p<k>.placed`, with k = FNV-1a(order id) mod the partitions.
    Partitions,
}

impl Layout {
    /// Every layout, the one measured against first.
    pub const ALL: [Layout; 3] = [Layout::OneSubject, Layout::PerOrder, Layout::Partitions];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Layout::OneSubject => "one-subject",
            Layout::PerOrder => "per-order",
            Layout::Partitions => "partitions",
        }
    }
}

/// The subjects of each layout under one deployment's names.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// `orders`, or `<prefix>.orders`.
    root: String,
    partitions: u32,
}

impl Subjects {
    /// The subjects under `names`, with `partitions` partitions (at least 1).
    pub fn new(names: &Names, partitions: u32) -> Self {
        let wildcard = names.stream_subjects();
        let root = wildcard.strip_suffix(".>").unwrap_or(&wildcard).to_owned();
        Self {
            root,
            partitions: partitions.max(1),
        }
    }

    /// Where the `OrderPlaced` of `order_id` goes under `layout`.
    pub fn placed(&self, layout: Layout, order_id: Uuid) -> String {
        match layout {
            Layout::OneSubject => format!("{}.placed", self.root),
            Layout::PerOrder => format!("{}.{}.placed", self.root, order_id),
            Layout::Partitions => format!(
                "{}.p{}.placed",
                self.root,
                partition(order_id, self.partitions)
            ),
        }
    }

    /// Where the `OrderCancelled` of `order_id` goes with a subject per order.
    pub fn cancelled(&self, order_id: Uuid) -> String {
        format!("{}.{}.cancelled", self.root, order_id)
    }

    /// Every subject of `order_id`'s events with a subject per order.
    pub fn of_order(&self, order_id: Uuid) -> String {
        format!("{}.{}.>", self.root, order_id)
    }

    /// The shape of `layout`'s subjects, for the report.
    pub fn pattern(&self, layout: Layout) -> String {
        match layout {
            Layout::OneSubject => format!("{}.placed", self.root),
            Layout::PerOrder => format!("{}.<order_id>.placed", self.root),
            Layout::Partitions => format!("{}.p<0..{}>.placed", self.root, self.partitions),
        }
    }
}

/// The partition of `order_id` among `partitions`: FNV-1a (64 bits) of its
/// 16 bytes, modulo `partitions`. A hash any language computes alike, so
/// that every publisher of an order's events picks the same partition.
pub fn partition(order_id: Uuid, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = order_id.as_bytes().iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    });
    (hash % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layout_has_its_subject_under_the_stream_filter() {
        let subjects = Subjects::new(&Names::new("").unwrap(), 256);
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        assert_eq!(subjects.placed(Layout::OneSubject, id), "orders.placed");
        assert_eq!(
            subjects.placed(Layout::PerOrder, id),
            "orders.01900000-0000-7000-8000-000000000001.placed"
        );
        assert_eq!(
            subjects.placed(Layout::Partitions, id),
            format!("orders.p{}.placed", partition(id, 256))
        );
        assert_eq!(
            subjects.of_order(id),
            "orders.01900000-0000-7000-8000-000000000001.>"
        );
        let prefixed = Subjects::new(&Names::new("t1").unwrap(), 8);
        assert_eq!(prefixed.placed(Layout::OneSubject, id), "t1.orders.placed");
        assert_eq!(
            prefixed.pattern(Layout::Partitions),
            "t1.orders.p<0..8>.placed"
        );
    }

    #[test]
    fn the_partition_is_fnv1a_of_the_id_and_spreads_the_orders() {
        // FNV-1a 64 of sixteen zero bytes is 0x88201fb960ff6465.
        assert_eq!(partition(Uuid::nil(), 256), 0x65);
        assert_eq!(partition(Uuid::nil(), 1), 0);
        let hit: std::collections::HashSet<u32> = (0..10_000)
            .map(|_| partition(Uuid::now_v7(), 256))
            .collect();
        assert_eq!(hit.len(), 256);
    }
}
