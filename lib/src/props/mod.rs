//! Property definitions and semantics shared by admin.property.* and admin.vm.property.*.
