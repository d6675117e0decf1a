//! The services the workers serve (OperationService, WikiService, ConflictsService), as the daemon's routes
//! carry them: the pool proxy in front forwards every call before it reaches these, which exist so that
//! reflection lists the services and a call the proxy would not take answers `UNIMPLEMENTED` (the generated
//! default) rather than success with nothing.

use crate::proto::gitaly::{
    conflicts_service_server::ConflictsService, operation_service_server::OperationService,
    wiki_service_server::WikiService,
};

#[derive(Debug, Default, Clone, Copy)]
pub struct Unbuilt;

impl OperationService for Unbuilt {}
impl WikiService for Unbuilt {}
impl ConflictsService for Unbuilt {}
