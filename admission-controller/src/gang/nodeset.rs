//! A set of model node ids as a bit set: eligibility of a pod set, a head gang's held nodes, label-index entries.
//! Membership tests are what placement does most, and at 5,000 nodes the whole set is 79 words.

/// Dense index of a node slot in the [`super::model::ClusterModel`].
pub type NodeId = usize;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet {
    words: Vec<u64>,
}

impl NodeSet {
    pub fn new() -> Self {
        NodeSet::default()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.words.get(id / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    pub fn insert(&mut self, id: NodeId) {
        let word = id / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (id % 64);
    }

    pub fn remove(&mut self, id: NodeId) {
        if let Some(w) = self.words.get_mut(id / 64) {
            *w &= !(1 << (id % 64));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn intersect_with(&mut self, other: &NodeSet) {
        for (i, w) in self.words.iter_mut().enumerate() {
            *w &= other.words.get(i).copied().unwrap_or(0);
        }
    }

    pub fn union_with(&mut self, other: &NodeSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(i * 64 + b)
            })
        })
    }
}

impl FromIterator<NodeId> for NodeSet {
    fn from_iter<T: IntoIterator<Item = NodeId>>(iter: T) -> Self {
        let mut s = NodeSet::new();
        for id in iter {
            s.insert(id);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic() {
        let mut s: NodeSet = [0, 5, 64, 200].into_iter().collect();
        assert!(s.contains(5) && s.contains(200) && !s.contains(6) && !s.contains(10_000));
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 64, 200]);
        s.remove(64);
        s.remove(9999);
        let other: NodeSet = [5, 200, 300].into_iter().collect();
        let mut i = s.clone();
        i.intersect_with(&other);
        assert_eq!(i.iter().collect::<Vec<_>>(), vec![5, 200]);
        s.union_with(&other);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 200, 300]);
        assert!(NodeSet::new().is_empty());
    }
}
