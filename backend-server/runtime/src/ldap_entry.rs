//! Reading LDAP search results without trusting their shape: ldap3's own
//! reader (`SearchEntry::construct`) panics on a malformed entry, and the
//! answer comes from outside. Shared by the coordinator's member directories
//! and the backends that keep groups in a directory.

/// The values of `attribute` (case-insensitive, as LDAP names are) in a
/// search result entry, read without trusting its shape: ldap3's own
/// reader panics on a malformed entry, and the answer comes from outside.
/// `None` when the entry is malformed; values that are not UTF-8 are skipped.
pub fn attribute_values(entry: &ldap3::asn1::StructureTag, attribute: &str) -> Option<Vec<String>> {
    use ldap3::asn1::PL;
    // SearchResultEntry ::= [APPLICATION 4] SEQUENCE { objectName, attributes }
    if entry.id != 4 {
        return None;
    }
    let constructed = |t: &ldap3::asn1::StructureTag| match &t.payload {
        PL::C(items) => Some(items.clone()),
        PL::P(_) => None,
    };
    let primitive = |t: &ldap3::asn1::StructureTag| match &t.payload {
        PL::P(bytes) => Some(bytes.clone()),
        PL::C(_) => None,
    };
    let parts = constructed(entry)?;
    let attrs = constructed(parts.get(1)?)?;
    let mut values = Vec::new();
    for pa in &attrs {
        // PartialAttribute ::= SEQUENCE { type, vals SET OF value }
        let pa = constructed(pa)?;
        let name = String::from_utf8(primitive(pa.first()?)?).ok()?;
        if !name.eq_ignore_ascii_case(attribute) {
            continue;
        }
        for v in constructed(pa.get(1)?)? {
            if let Ok(s) = String::from_utf8(primitive(&v)?) {
                values.push(s);
            }
        }
    }
    Some(values)
}
