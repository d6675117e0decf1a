//! Services whose RPCs are not built yet. Every method answers `UNIMPLEMENTED` (the generated default), so
//! a client can tell "not here" from "nothing there"; the services are registered so reflection lists them.

use crate::proto::gitaly::{
    conflicts_service_server::ConflictsService, operation_service_server::OperationService,
    wiki_service_server::WikiService,
};

#[derive(Debug, Default, Clone, Copy)]
pub struct Unbuilt;

impl OperationService for Unbuilt {}
impl WikiService for Unbuilt {}
impl ConflictsService for Unbuilt {}
