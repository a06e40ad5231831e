"""Network builders (caffe.NetSpec), layer names as in the BVLC model zoo."""
