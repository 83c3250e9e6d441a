//! Not implemented yet: refuses to load.

use super::access::Obj;
use super::{ClassLabels, Classifier, Regressor};
use crate::model::ModelError;

pub(crate) fn build_classifier(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    Err(obj.unsupported("not implemented yet"))
}

pub(crate) fn build_regressor(obj: Obj<'_>) -> Result<Box<dyn Regressor>, ModelError> {
    Err(obj.unsupported("not implemented yet"))
}
