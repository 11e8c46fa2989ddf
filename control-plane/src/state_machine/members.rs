//! Member labels: applying `SetMemberLabels` (zone, cloud, region,
//! addresses; read by placement and status).

use super::dispatch::{Applied, Applier};
use super::tables::*;
use super::tx::ApplyError;
use crate::types::{Member, NodeId, Outcome};

impl Applier<'_, '_> {
    pub(super) fn set_member_labels(
        &mut self,
        node: NodeId,
        member: &Member,
    ) -> Result<Applied, ApplyError> {
        self.tx.put(MEMBERS, &u64_key(node), member)?;
        tracing::info!(node, %member, "member labels set");
        Ok(Ok(Outcome::Done))
    }
}
