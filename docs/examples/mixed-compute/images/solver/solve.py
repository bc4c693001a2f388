import numpy

print(numpy.linalg.eigvals(numpy.random.rand(200, 200)).max())
