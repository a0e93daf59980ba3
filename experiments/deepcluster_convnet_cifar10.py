"""DeepCluster, small NIN-style ConvNet, full CIFAR-10 (50,000 train images).

Same backbone and CPU budget (about 20 minutes on 2 cores) as
experiments/rotation_convnet_cifar10.py. The paper's ImageNet setting is
k = 10,000 clusters for 1.28M images (about 128 images a cluster), PCA to 256
dims, a 4096-wide MLP, Sobel input, SGD lr 0.05, momentum 0.9, weight decay
1e-5, batch 256, re-clustering every epoch. Scaled to CIFAR-10: k = 500 (100
images a cluster), a 512-wide hidden layer, PCA to 128 dims. One epoch is 390
steps of 128, so 2,400 steps re-cluster 7 times (each pass over 50,000 images
adds about half a minute on this CPU).
"""

from sslx import configs
from sslx.pretexts.image import deepcluster


def get_config(arg=None):
  c = configs.base()
  c.pretext = deepcluster.default_config()
  c.pretext.num_clusters = 500
  c.pretext.num_examples = 50000
  c.pretext.hidden_dim = 512
  c.pretext.pca_dim = 128
  c.dataset = "folder:cifar10"
  c.batch_size = 128
  c.total_steps = 2400
  c.optimizer.learning_rate = 0.05
  c.optimizer.weight_decay = 1e-5
  c.optimizer.warmup_steps = 100
  c.log_every = 50
  c.checkpoint_every = 400
  if arg == "quick":
    c = configs.quick(c)
    c.train_examples = c.pretext.num_examples = 64  # Re-clusters every 2 steps.
    c.pretext.num_clusters = 8
    c.pretext.hidden_dim = 16
    c.pretext.pca_dim = 8
    c.batch_size = 32
    c.evaluate.batch_size = 32
  return c
